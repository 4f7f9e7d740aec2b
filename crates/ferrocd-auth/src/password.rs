//! Passwords as etcd stores them: bcrypt hashes with Go's `$2a$` prefix. Hashing and checking
//! cost tens of milliseconds at etcd's cost 10: the server runs both off its async threads,
//! and hashes before proposing (a password never enters the log, and apply never hashes).

/// etcd's `--bcrypt-cost` default.
pub const DEFAULT_COST: u32 = 10;

/// The costs bcrypt accepts (Go's `bcrypt.MinCost` and `MaxCost`).
pub const COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// `password`'s bcrypt hash at `cost`, in Go's `$2a$` form.
///
/// # Errors
/// A cost outside [`COSTS`]; a password bcrypt cannot take (over 72 bytes).
pub fn hash(password: &str, cost: u32) -> Result<String, String> {
    if !COSTS.contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside {}..={}", COSTS.start(), COSTS.end()));
    }
    bcrypt::non_truncating_hash_with_result(password, cost)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the bcrypt `hash` (any of the `$2a$`, `$2b$`, `$2y$` forms).
pub fn verify(password: &str, hash: &str) -> bool {
    bcrypt::non_truncating_verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_gos_form_and_verify() {
        let h = hash("secret", 4).unwrap();
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(verify("secret", &h));
        assert!(!verify("Secret", &h));
        assert!(!verify("secret", "not a hash"));
        // The same hash in the other prefixes bcrypt libraries write verifies too.
        for prefix in ["$2b$", "$2y$"] {
            assert!(verify("secret", &h.replacen("$2a$", prefix, 1)), "{prefix}");
        }
        assert!(hash("x", 3).is_err());
        assert!(hash(&"p".repeat(73), 4).is_err(), "bcrypt takes at most 72 bytes");
    }
}
