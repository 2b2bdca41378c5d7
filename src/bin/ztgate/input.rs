//! Reading tokens, secrets and bodies: from stdin (`-`) or the environment, bounded.

use std::io::Read;

use crate::{Failure, TokenArg};

/// The most read from stdin for a token (Access tokens are a few KiB).
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// The most read from stdin or a file for a body or a JWKS document.
pub(crate) const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// The token named by `arg`, trimmed.
pub(crate) fn token(arg: &TokenArg) -> Result<String, Failure> {
    let raw = match (&arg.token, &arg.token_env) {
        (_, Some(var)) => env(var)?,
        (Some(t), None) if t == "-" => stdin(MAX_TOKEN_BYTES, "token")?,
        (Some(t), None) => t.clone(),
        (None, None) => {
            return Err(Failure("no token: pass `-` and the token on stdin, or --token-env VAR".into()));
        }
    };
    let token = raw.trim().to_owned();
    if token.is_empty() {
        return Err(Failure("the token is empty".into()));
    }
    Ok(token)
}

/// Environment variable `var`, which must be set, UTF-8 and not empty. The error names the
/// variable, never its value.
pub(crate) fn env(var: &str) -> Result<String, Failure> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(Failure(format!("environment variable {var} is empty"))),
        Err(std::env::VarError::NotPresent) => Err(Failure(format!("environment variable {var} is not set"))),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure(format!("environment variable {var} is not UTF-8")))
        }
    }
}

/// Stdin, at most `max` bytes, as UTF-8.
pub(crate) fn stdin(max: u64, what: &str) -> Result<String, Failure> {
    let bytes = read_capped(std::io::stdin().lock(), max, what)?;
    String::from_utf8(bytes).map_err(|_| Failure(format!("the {what} on stdin is not UTF-8")))
}

/// The file at `path`, at most `max` bytes.
pub(crate) fn file(path: &str, max: u64) -> Result<Vec<u8>, Failure> {
    let f = std::fs::File::open(path).map_err(|e| Failure(format!("cannot open {path}: {e}")))?;
    read_capped(f, max, path)
}

fn read_capped(reader: impl Read, max: u64, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    reader
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure(format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(Failure(format!("the {what} is larger than {max} bytes")));
    }
    Ok(bytes)
}
