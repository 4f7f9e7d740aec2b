//! Auth tokens, as etcd issues them: `--auth-token simple` (random letters and the Raft index
//! of the Authenticate entry, known to every member because every member applies that entry,
//! expiring after `--auth-token-ttl` without use) or `--auth-token jwt,...` (signed claims
//! `username`, `revision`, `exp`, checked by signature alone).
//!
//! Time comes from the caller (`now`), as in `ferrocd-lease`; a JWT's `exp` is checked
//! against the system clock, as every JWT verifier does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{AuthInfo, Error, Result};

/// etcd's default JWT lifetime (`ttl` of `--auth-token jwt,...`).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// Letters a simple token's random part is drawn from.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `--auth-token`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOptions {
    /// `simple`.
    Simple,
    /// `jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`.
    Jwt {
        /// The public key (PEM); for the HS family, unused (the secret is `priv_key`).
        pub_key: Option<PathBuf>,
        /// The signing key (PEM, or the raw secret for the HS family). Without it a member
        /// verifies tokens but cannot issue them.
        priv_key: Option<PathBuf>,
        method: Algorithm,
        ttl: Duration,
    },
}

impl TokenOptions {
    /// Parses `--auth-token` as etcd does.
    ///
    /// # Errors
    /// An unknown token type, option or signing method, a bad `ttl`, JWT without keys.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => match parts.next() {
                None => Ok(Self::Simple),
                Some(extra) => Err(format!("simple tokens take no options (got {extra:?})")),
            },
            "jwt" => {
                let (mut pub_key, mut priv_key, mut method, mut ttl) = (None, None, None, DEFAULT_JWT_TTL);
                for option in parts {
                    let (name, value) =
                        option.split_once('=').ok_or_else(|| format!("invalid auth token option {option:?}"))?;
                    match name {
                        "pub-key" => pub_key = Some(PathBuf::from(value)),
                        "priv-key" => priv_key = Some(PathBuf::from(value)),
                        "sign-method" => {
                            method = Some(
                                value
                                    .parse::<Algorithm>()
                                    .map_err(|_| format!("unsupported JWT sign-method {value:?}"))?,
                            );
                        }
                        "ttl" => {
                            let nanos = go_parse_duration::parse_duration(value)
                                .map_err(|_| format!("invalid JWT ttl {value:?}"))?;
                            ttl = Duration::from_nanos(u64::try_from(nanos).map_err(|_| "negative JWT ttl")?);
                        }
                        _ => return Err(format!("unknown token option {name:?}")),
                    }
                }
                let method = method.ok_or("jwt tokens need sign-method")?;
                if pub_key.is_none() && priv_key.is_none() {
                    return Err("jwt tokens need pub-key or priv-key".into());
                }
                Ok(Self::Jwt { pub_key, priv_key, method, ttl })
            }
            other => Err(format!("unknown token type {other:?}")),
        }
    }
}

/// A JWT's claims, as etcd writes them.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// How many verified JWTs a member remembers (verifying a signature costs far more than a
/// request: ES256 here about half a millisecond).
const VERIFIED_CAPACITY: usize = 4096;

/// JWT keys loaded from `--auth-token`, and the tokens already verified.
struct Jwt {
    method: Algorithm,
    sign: Option<EncodingKey>,
    verify: DecodingKey,
    ttl: Duration,
    /// Token → who it names and its `exp` (Unix seconds): a token is immutable, so its
    /// signature is checked once; its expiry is checked at every use.
    verified: HashMap<String, (AuthInfo, u64)>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("method", &self.method).field("signs", &self.sign.is_some()).finish()
    }
}

impl Jwt {
    fn load(
        pub_key: Option<&PathBuf>,
        priv_key: Option<&PathBuf>,
        method: Algorithm,
        ttl: Duration,
    ) -> Result<Self, String> {
        use jsonwebtoken::AlgorithmFamily as F;
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let family = method.family();
        let bad = |e: jsonwebtoken::errors::Error| format!("invalid {method:?} key: {e}");
        let sign = match priv_key {
            None => None,
            Some(path) => {
                let pem = read(path)?;
                Some(match family {
                    F::Hmac => EncodingKey::from_secret(&pem).map_err(bad)?,
                    F::Rsa => EncodingKey::from_rsa_pem(&pem).map_err(bad)?,
                    F::Ec => EncodingKey::from_ec_pem(&pem).map_err(bad)?,
                    F::Ed => EncodingKey::from_ed_pem(&pem).map_err(bad)?,
                })
            }
        };
        let verify = match (family, pub_key, priv_key) {
            (F::Hmac, _, Some(secret)) => DecodingKey::from_secret(&read(secret)?).map_err(bad)?,
            (F::Hmac, _, None) => return Err("HS sign-methods need the secret as priv-key".into()),
            (_, None, _) => return Err(format!("{method:?} needs pub-key to verify tokens")),
            (F::Rsa, Some(p), _) => DecodingKey::from_rsa_pem(&read(p)?).map_err(bad)?,
            (F::Ec, Some(p), _) => DecodingKey::from_ec_pem(&read(p)?).map_err(bad)?,
            (F::Ed, Some(p), _) => DecodingKey::from_ed_pem(&read(p)?).map_err(bad)?,
        };
        Ok(Self { method, sign, verify, ttl, verified: HashMap::new() })
    }

    fn sign(&self, user: &str, revision: u64) -> Result<String> {
        let key = self.sign.as_ref().ok_or(Error::VerifyOnly)?;
        let exp = jsonwebtoken::get_current_timestamp() + self.ttl.as_secs();
        let claims = Claims { username: user.to_owned(), revision, exp };
        jsonwebtoken::encode(&Header::new(self.method), &claims, key).map_err(|e| Error::Engine(e.to_string()))
    }

    fn verify(&mut self, token: &str) -> Option<AuthInfo> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((info, exp)) = self.verified.get(token) {
            if *exp > now {
                return Some(info.clone());
            }
            self.verified.remove(token);
            return None;
        }
        let mut validation = Validation::new(self.method);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &validation).ok()?;
        let info = AuthInfo { user: data.claims.username, revision: data.claims.revision };
        if self.verified.len() >= VERIFIED_CAPACITY {
            self.verified.retain(|_, (_, exp)| *exp > now);
            if self.verified.len() >= VERIFIED_CAPACITY {
                self.verified.clear();
            }
        }
        self.verified.insert(token.to_owned(), (info.clone(), data.claims.exp));
        Some(info)
    }
}

/// A simple token's owner and when it expires unless used.
#[derive(Debug)]
struct Simple {
    user: String,
    expires: Instant,
}

#[derive(Debug)]
enum Kind {
    Simple(HashMap<String, Simple>),
    Jwt(Jwt),
}

/// The tokens a member issued or knows of.
#[derive(Debug)]
pub struct Tokens {
    kind: Kind,
    /// A simple token's lifetime without use (`--auth-token-ttl`).
    ttl: Duration,
}

impl Tokens {
    /// Tokens of the kind `options` says; simple tokens live `simple_ttl` without use.
    ///
    /// # Errors
    /// JWT keys that cannot be read or parsed.
    pub fn new(options: &TokenOptions, simple_ttl: Duration) -> Result<Self, String> {
        let kind = match options {
            TokenOptions::Simple => Kind::Simple(HashMap::new()),
            TokenOptions::Jwt { pub_key, priv_key, method, ttl } => {
                Kind::Jwt(Jwt::load(pub_key.as_ref(), priv_key.as_ref(), *method, *ttl)?)
            }
        };
        Ok(Self { kind, ttl: simple_ttl })
    }

    /// The random part of a simple token, drawn by the member that proposes an Authenticate
    /// (from the system's secure random source).
    pub fn prefix() -> String {
        let mut bytes = [0u8; 16];
        // Rejection sampling keeps the letters uniform.
        let mut out = String::with_capacity(16);
        while out.len() < 16 {
            getrandom::fill(&mut bytes).expect("the system's random source");
            for b in bytes {
                if out.len() < 16 && (b as usize) < LETTERS.len() * 4 {
                    out.push(LETTERS[b as usize % LETTERS.len()] as char);
                }
            }
        }
        out
    }

    /// Issues `user` a token for the applied Authenticate entry at `index` (`prefix` from its
    /// proposer), standing for auth `revision`.
    ///
    /// # Errors
    /// A member with a verify-only JWT key.
    pub fn assign(&mut self, user: &str, revision: u64, prefix: &str, index: u64, now: Instant) -> Result<String> {
        match &mut self.kind {
            Kind::Simple(tokens) => {
                let token = format!("{prefix}.{index}");
                tokens.insert(token.clone(), Simple { user: user.to_owned(), expires: now + self.ttl });
                Ok(token)
            }
            Kind::Jwt(jwt) => jwt.sign(user, revision),
        }
    }

    /// Who `token` stands for; a simple token is good for another TTL from `now` on, and
    /// stands for the store's current `revision`.
    pub fn info(&mut self, token: &str, revision: u64, now: Instant) -> Option<AuthInfo> {
        match &mut self.kind {
            Kind::Simple(tokens) => {
                let entry = tokens.get_mut(token)?;
                if entry.expires <= now {
                    tokens.remove(token);
                    return None;
                }
                entry.expires = now + self.ttl;
                Some(AuthInfo { user: entry.user.clone(), revision })
            }
            Kind::Jwt(jwt) => jwt.verify(token),
        }
    }

    /// Forgets `user`'s simple tokens (deleted, or given a new password).
    pub fn invalidate_user(&mut self, user: &str) {
        if let Kind::Simple(tokens) = &mut self.kind {
            tokens.retain(|_, t| t.user != user);
        }
    }

    /// Forgets every simple token (auth turned off).
    pub fn clear(&mut self) {
        if let Kind::Simple(tokens) = &mut self.kind {
            tokens.clear();
        }
    }

    /// Drops simple tokens unused for their TTL by `now`.
    pub fn sweep(&mut self, now: Instant) {
        if let Kind::Simple(tokens) = &mut self.kind {
            tokens.retain(|_, t| t.expires > now);
        }
    }

    /// How many simple tokens are alive (0 for JWT).
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Simple(tokens) => tokens.len(),
            Kind::Jwt(_) => 0,
        }
    }

    /// Whether no simple token is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
