//! get, put, del, txn and compaction, with etcdctl's flags, checks and messages.

use std::io::{BufRead, Read};

use clap::{ArgAction, Args, Parser};
use ferrocd_client::kv::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

use crate::{CtlError, CtlResult, Ctx, exit, go};

#[derive(Debug, Args, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long = "sort-by", default_value = "")]
    sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    limit: i64,
    /// Get keys with matching prefix
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    rev: i64,
    /// Get only the keys
    #[arg(long = "keys-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    keys_only: bool,
    /// Get only the count
    #[arg(long = "count-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long = "print-value-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    print_value_only: bool,
    #[arg(allow_hyphen_values = false)]
    args: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PutArgs {
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    lease: String,
    /// return the previous key-value pair before modification
    #[arg(long = "prev-kv", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prev_kv: bool,
    /// updates the key using its current value
    #[arg(long = "ignore-value", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long = "ignore-lease", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    ignore_lease: bool,
    args: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prefix: bool,
    /// return deleted key-value pairs
    #[arg(long = "prev-kv", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    from_key: bool,
    args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    interactive: bool,
    args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    physical: bool,
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
}

const BOTH_SPANS: &str = "`--prefix` and `--from-key` cannot be set at the same time, choose one";
const TOO_MANY: &str = "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";

impl GetArgs {
    /// The key and options etcdctl's `getGetOp` makes of these arguments.
    fn op(&self) -> Result<(Vec<u8>, GetOptions), CtlError> {
        if self.args.is_empty() {
            return Err(CtlError::bad_args(
                "get command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(CtlError::bad_args(BOTH_SPANS));
        }
        let mut options = GetOptions::new();
        match self.consistency.as_str() {
            "s" => options = options.with_serializable(),
            "l" => {}
            other => {
                return Err(CtlError::bad_feature(format!("unknown consistency flag {}", go::quote(other.as_bytes()))));
            }
        }
        let key = self.args[0].as_bytes().to_vec();
        if self.args.len() > 1 {
            if self.prefix || self.from_key {
                return Err(CtlError::bad_args(TOO_MANY));
            }
            options = options.with_range(self.args[1].as_bytes());
        }
        options = options.with_limit(self.limit);
        if self.rev > 0 {
            options = options.with_revision(self.rev);
        }
        let order = match self.order.to_uppercase().as_str() {
            "ASCEND" => 1,
            "DESCEND" => 2,
            "" => 0,
            _ => return Err(CtlError::bad_feature(format!("bad sort order {}", self.order))),
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => 2,
            "KEY" | "" => 0,
            "MODIFY" => 3,
            "VALUE" => 4,
            "VERSION" => 1,
            _ => return Err(CtlError::bad_feature(format!("bad sort target {}", self.sort_by))),
        };
        // clientv3's WithSort: ascending by key is the server's own order.
        let order = if target == 0 && order == 1 { 0 } else { order };
        options = options.with_sort_raw(target, order);
        if self.prefix {
            options = options.with_prefix();
        }
        if self.from_key {
            options = options.with_from_key();
        }
        if self.keys_only {
            options = options.with_keys_only();
        }
        if self.count_only {
            options = options.with_count_only();
        }
        Ok((key, options))
    }
}

impl PutArgs {
    fn op(&self, stdin_value: bool) -> Result<(Vec<u8>, Vec<u8>, PutOptions), CtlError> {
        let needs = || CtlError::bad_args("put command needs 1 argument and input from stdin or 2 arguments");
        if self.args.is_empty() {
            return Err(needs());
        }
        if self.ignore_value && self.args.len() > 1 {
            return Err(CtlError::bad_args("put command needs only 1 argument when 'ignore-value' is set"));
        }
        let value = if self.ignore_value {
            Vec::new()
        } else if let Some(v) = self.args.get(1) {
            v.as_bytes().to_vec()
        } else if stdin_value {
            // etcdctl's argOrStdin: the whole of stdin, which must not be empty.
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|_| needs())?;
            if buf.is_empty() {
                return Err(needs());
            }
            buf
        } else {
            return Err(needs());
        };
        let id = go::parse_int(&self.lease, 16)
            .map_err(|e| CtlError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
        let mut options = PutOptions::new();
        if id != 0 {
            options = options.with_lease(id);
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        if self.ignore_value {
            options = options.with_ignore_value();
        }
        if self.ignore_lease {
            options = options.with_ignore_lease();
        }
        Ok((self.args[0].as_bytes().to_vec(), value, options))
    }
}

impl DelArgs {
    fn op(&self) -> Result<(Vec<u8>, DeleteOptions), CtlError> {
        if self.args.is_empty() || self.args.len() > 2 {
            return Err(CtlError::bad_args(
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(CtlError::bad_args(BOTH_SPANS));
        }
        let mut options = DeleteOptions::new();
        if self.args.len() > 1 {
            if self.prefix || self.from_key {
                return Err(CtlError::bad_args(TOO_MANY));
            }
            options = options.with_range(self.args[1].as_bytes());
        }
        if self.prefix {
            options = options.with_prefix();
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        if self.from_key {
            options = options.with_from_key();
        }
        Ok((self.args[0].as_bytes().to_vec(), options))
    }
}

pub async fn get(ctx: &Ctx, args: GetArgs) -> CtlResult {
    let (key, options) = args.op()?;
    let client = ctx.client().await?;
    let reply = client.get(key, Some(options)).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
    let mut printer = ctx.printer.clone();
    if args.print_value_only {
        if printer.format != crate::print::Format::Simple {
            return Err(CtlError::bad_args("print-value-only is only for `--write-out=simple`"));
        }
        printer.value_only = true;
    }
    printer.get(&reply)
}

pub async fn put(ctx: &Ctx, args: PutArgs) -> CtlResult {
    let (key, value, options) = args.op(true)?;
    let client = ctx.client().await?;
    let reply = client.put(key, value, Some(options)).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
    ctx.printer.put(&reply)
}

pub async fn del(ctx: &Ctx, args: DelArgs) -> CtlResult {
    let (key, options) = args.op()?;
    let client = ctx.client().await?;
    let reply = client.delete(key, Some(options)).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
    ctx.printer.delete(&reply)
}

pub async fn compaction(ctx: &Ctx, args: CompactionArgs) -> CtlResult {
    if args.args.len() != 1 {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    }
    let rev = go::parse_int(&args.args[0], 10).map_err(|e| CtlError::new(exit::ERROR, e))?;
    let client = ctx.client().await?;
    client.compact(rev, args.physical).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
    println!("compacted revision {rev}");
    Ok(())
}

/// A request line of a txn: `get`, `put` or `del` with their own flags.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
enum Request {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

pub async fn txn(ctx: &Ctx, args: TxnArgs) -> CtlResult {
    if !args.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument"));
    }
    let client = ctx.client().await?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let prompt = |s: &str| {
        if args.interactive {
            println!("{s}");
        }
    };
    prompt("compares:");
    let compares = read_block(&mut lines, parse_compare)?;
    prompt("success requests (get, put, del):");
    let success = read_block(&mut lines, parse_request)?;
    prompt("failure requests (get, put, del):");
    let failure = read_block(&mut lines, parse_request)?;
    let txn = Txn::new().when(compares).and_then(success).or_else(failure);
    let reply = client.txn(txn).await.map_err(|e| CtlError::client(exit::ERROR, &e))?;
    ctx.printer.txn(&reply)
}

/// Lines up to the first empty one, each parsed; the end of input before it is an error.
fn read_block<T>(input: &mut impl BufRead, parse: fn(&str) -> Result<T, String>) -> Result<Vec<T>, CtlError> {
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        let n = input.read_line(&mut line).map_err(|e| CtlError::new(exit::INVALID_INPUT, e.to_string()))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(CtlError::new(exit::INVALID_INPUT, "EOF"));
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(out);
        }
        out.push(parse(line).map_err(|e| CtlError::new(exit::INVALID_INPUT, e))?);
    }
}

fn parse_request(line: &str) -> Result<TxnOp, String> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(format!("invalid txn compare request: {line}"));
    }
    let invalid = || format!("invalid txn request: {line}");
    let request = Request::try_parse_from(&args).map_err(|_| invalid())?;
    Ok(match request {
        Request::Get(a) => {
            let (key, options) = a.op().map_err(|e| e.message)?;
            TxnOp::get(key, Some(options))
        }
        Request::Put(a) => {
            let (key, value, options) = a.op(false).map_err(|e| e.message)?;
            TxnOp::put(key, value, Some(options))
        }
        Request::Del(a) => {
            let (key, options) = a.op().map_err(|e| e.message)?;
            TxnOp::delete(key, Some(options))
        }
    })
}

/// `target("key") op "value"`, as etcdctl reads a comparison.
fn parse_compare(line: &str) -> Result<Compare, String> {
    let (target, rest) = line.split_once('(').ok_or_else(|| format!("malformed comparison: {line}"))?;
    // Go's Sscanf("%q) %s %q"): on a short scan, etcdctl shows what it got.
    let (mut key, mut op, mut value) = (String::new(), String::new(), String::new());
    let scanned = (|| {
        let (k, rest) = go::unquote_prefix(rest)?;
        key = k;
        let rest = rest.strip_prefix(')')?.trim_start();
        let (o, rest) = rest.split_once(char::is_whitespace)?;
        op = o.to_string();
        let (v, _) = go::unquote_prefix(rest.trim_start())?;
        value = v;
        Some(())
    })();
    if scanned.is_none() {
        return Err(format!(
            "malformed comparison: {line}; got {target}({}) {op} {}",
            go::quote(key.as_bytes()),
            go::quote(value.as_bytes())
        ));
    }
    let (key, value) = (key, value);
    let op = match op.as_str() {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(format!("malformed comparison: {line} (unknown op {op})")),
    };
    let number = || value.parse::<i64>().map_err(|_| format!("invalid txn compare request: {line}"));
    Ok(match target {
        "ver" | "version" => Compare::version(key, op, number()?),
        "c" | "create" => Compare::create_revision(key, op, number()?),
        "m" | "mod" => Compare::mod_revision(key, op, number()?),
        "val" | "value" => Compare::value(key, op, value),
        "lease" => Compare::lease(key, op, number()?),
        _ => return Err(format!("malformed comparison: {line} (unknown target {target})")),
    })
}

/// A line split into arguments as etcdctl's `argify` does: double-quoted strings (Go escapes),
/// single-quoted strings, or runs of non-space.
pub fn argify(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (arg, after) = go::unquote_prefix(rest).ok_or_else(|| format!("bad quoted string in {line}"))?;
            args.push(arg);
            rest = after;
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or_else(|| format!("bad quoted string in {line}"))?;
            args.push(quoted[..end].to_string());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argify_splits_as_etcdctl() {
        assert_eq!(argify(r#"put "a b" 'c d' e\x"#).unwrap(), ["put", "a b", "c d", "e\\x"]);
        assert_eq!(argify(r#"put k "v\n""#).unwrap(), ["put", "k", "v\n"]);
    }

    #[test]
    fn compares_and_requests_parse() {
        assert!(parse_compare(r#"mod("k1") > "0""#).is_ok());
        assert!(parse_compare(r#"value("k1") = "v1""#).is_ok());
        assert_eq!(
            parse_compare(r#"bogus("k") = "1""#).unwrap_err(),
            r#"malformed comparison: bogus("k") = "1" (unknown target bogus)"#
        );
        assert_eq!(parse_compare("nothing").unwrap_err(), "malformed comparison: nothing");
        assert_eq!(
            parse_compare("value(k) = \"a\"").unwrap_err(),
            "malformed comparison: value(k) = \"a\"; got value(\"\")  \"\""
        );
        assert!(parse_request("put k v --prev-kv").is_ok());
        assert!(parse_request("get k --prefix").is_ok());
        assert_eq!(parse_request("frob k v").unwrap_err(), "invalid txn request: frob k v");
    }
}
