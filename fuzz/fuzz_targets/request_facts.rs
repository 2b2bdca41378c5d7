//! `RequestFacts::from_parts_with_query` on arbitrary header names, values, cookies, query
//! strings and limits.
//!
//! Input: byte 0 picks the limits (bits 6-7 = 3: small query limits), then a length-prefixed
//! path, then entries of `name byte, length byte, value bytes`; a name that picks `query`
//! appends its value to the query string instead of sending a header. Invariants: no panic; one
//! assertion header is the credential whatever the cookies hold (no fall-through, even when it
//! is empty or garbage); a repeated one is ambiguous; without it the credential is the
//! `CF_Authorization` cookie as a small independent model reads it (conflicting cookies are
//! refused); a query over its byte or parameter limit is 414; `query_param("token")` is the
//! `token` parameter as an independent model reads it (names and values form-decoded, two
//! different values refused, never "the first wins"); size limits hold; and `Debug` never shows
//! a credential.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use ztgate::request::{CredentialSource, RequestError, RequestFacts, RequestLimits};

const NAMES: [&str; 9] = [
    "cf-access-jwt-assertion",
    "cookie",
    "cf-connecting-ip",
    "cf-ipcountry",
    "cf-access-jwt-assertion",
    "cookie",
    "authorization",
    "x-api-key",
    QUERY,
];
/// Not a header: the entry's value is appended to the query string.
const QUERY: &str = "query";

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("request_facts"), |data: &[u8]| {
    let Some((&limits_byte, mut rest)) = data.split_first() else { return };
    let small_query = limits_byte >> 6 == 3;
    let limits = RequestLimits {
        max_token_bytes: [16 * 1024, 0, 8, 64][usize::from(limits_byte & 3)],
        max_cookie_bytes: [32 * 1024, 0, 16, 128][usize::from(limits_byte >> 2 & 3)],
        max_path_bytes: [8 * 1024, 0, 3, 16][usize::from(limits_byte >> 4 & 3)],
        max_query_bytes: if small_query { 64 } else { 4 * 1024 },
        max_query_params: if small_query { 3 } else { 64 },
        ..RequestLimits::default()
    };
    let method = [Method::GET, Method::POST, Method::DELETE][usize::from(limits_byte >> 6) % 3].clone();
    let path = take(&mut rest);
    let path = String::from_utf8_lossy(path);
    let mut headers = HeaderMap::new();
    let mut query: Option<String> = None;
    while let Some((&name, tail)) = rest.split_first() {
        rest = tail;
        let value = take(&mut rest);
        let name = NAMES[usize::from(name) % NAMES.len()];
        if name == QUERY {
            query.get_or_insert_default().push_str(&String::from_utf8_lossy(value));
        } else if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }

    let outcome = RequestFacts::from_parts_with_query(&method, &path, query.as_deref(), &headers, &limits);
    // The URI is judged first (414), whatever the headers hold: the query, then the path.
    if let Some(q) = &query {
        if q.len() > limits.max_query_bytes {
            let want = RequestError::UriTooLong { part: "query string", limit: limits.max_query_bytes };
            assert_eq!(outcome.err(), Some(want));
            return;
        }
        if q.split('&').filter(|p| !p.is_empty()).count() > limits.max_query_params {
            assert_eq!(outcome.err(), Some(RequestError::TooManyQueryParams { limit: limits.max_query_params }));
            return;
        }
    }
    if path.len() > limits.max_path_bytes {
        assert_eq!(outcome.err(), Some(RequestError::UriTooLong { part: "path", limit: limits.max_path_bytes }));
        return;
    }
    let assertions: Vec<&HeaderValue> = headers.get_all("cf-access-jwt-assertion").iter().collect();
    match (assertions.as_slice(), &outcome) {
        // Exactly one assertion header within the limit: it is the credential, whatever the
        // cookies say, even when empty or garbage (no fall-through to the cookie).
        ([one], Ok(facts)) => {
            let jwt = facts.access_jwt().expect("the assertion header was dropped");
            assert_eq!(jwt.source(), CredentialSource::Header);
            assert_eq!(jwt.expose(), String::from_utf8_lossy(one.as_bytes()));
            assert!(one.len() <= limits.max_token_bytes);
        }
        ([one], Err(e)) if one.len() > limits.max_token_bytes => assert_eq!(
            e,
            &RequestError::HeaderTooLarge {
                header: "Cf-Access-Jwt-Assertion",
                limit: limits.max_token_bytes
            }
        ),
        // Otherwise another credential of the request was refused (a bad cookie header, say):
        // the request is refused, which is never a fall-through.
        ([_], Err(_)) => {}
        ([], _) => match (cookie_model(&headers), &outcome) {
            (Ok(want), Ok(facts)) => {
                let got = facts.access_jwt().map(|c| (c.source(), c.expose().as_bytes().to_vec()));
                let want =
                    want.map(|v| (CredentialSource::Cookie, String::from_utf8_lossy(&v).as_bytes().to_vec()));
                assert_eq!(got, want, "cookie credential");
                // The credential kept stays within the limit, measured after the text conversion
                // (a non-UTF-8 byte becomes a 3-byte U+FFFD).
                if let Some((_, v)) = &got {
                    assert!(v.len() <= limits.max_token_bytes, "an oversized cookie credential was kept");
                }
            }
            (Err(()), Ok(facts)) => panic!("conflicting CF_Authorization cookies were accepted: {facts:?}"),
            (_, Err(_)) => {}
        },
        (_, outcome) => assert_eq!(
            outcome.as_ref().err(),
            Some(&RequestError::AmbiguousCredential { name: "Cf-Access-Jwt-Assertion" }),
            "a repeated assertion header"
        ),
    }
    if let Ok(facts) = &outcome {
        for credential in facts.access_jwt().into_iter().chain(facts.bearer()).chain(facts.api_key_header()) {
            let value = credential.expose();
            // (A path that holds the value shows it legitimately, quoted or not.)
            if value.len() > 64 && !path.contains(value) && !format!("{path:?}").contains(value) {
                assert!(!format!("{credential:?} {facts:?}").contains(value), "Debug shows a credential");
            }
        }
        let token = facts.query_param("token");
        match (query.as_deref().map(token_model), &token) {
            (None | Some(Ok(None)), Ok(None)) => {}
            (Some(Ok(Some(want))), Ok(Some(got))) => {
                assert_eq!(got.source(), CredentialSource::Query);
                assert_eq!(got.expose(), String::from_utf8_lossy(&want), "query token");
                let value = got.expose();
                if value.len() > 64 && !path.contains(value) {
                    assert!(!format!("{got:?} {facts:?}").contains(value), "Debug shows a query token");
                }
            }
            (Some(Err(())), Err(e)) => {
                assert_eq!(e, &RequestError::AmbiguousCredential { name: "a query parameter" })
            }
            (want, got) => panic!("query {query:?}: the model reads {want:?}, query_param {got:?}"),
        }
        assert_eq!(facts.method(), &method);
        assert!(facts.path().len() <= limits.max_path_bytes && facts.path() == path);
        let short = |name: &str, max: usize| {
            headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| v.len() <= max).map(str::to_owned)
        };
        assert_eq!(facts.client_ip().map(str::to_owned), short("cf-connecting-ip", 64));
        assert_eq!(facts.country().map(str::to_owned), short("cf-ipcountry", 8));
    }
});

fn take<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let Some((&len, tail)) = rest.split_first() else { return &[] };
    let len = usize::from(len).min(tail.len());
    let (value, tail) = tail.split_at(len);
    *rest = tail;
    value
}

/// The `CF_Authorization` cookie by the documented rule, written without looking at how
/// `request` does it: every `Cookie` field, `;`-separated pairs, exact name, value trimmed and
/// unquoted; `Err` when two occurrences differ.
fn cookie_model(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ()> {
    let mut found: Option<&[u8]> = None;
    for field in headers.get_all("cookie") {
        for pair in field.as_bytes().split(|b| *b == b';') {
            let Some(value) = pair.trim_ascii().strip_prefix(b"CF_Authorization=") else { continue };
            let value = match value.trim_ascii() {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            if found.is_some_and(|first| first != value) {
                return Err(());
            }
            found = Some(value);
        }
    }
    Ok(found.map(<[u8]>::to_vec))
}

/// The `token` query parameter by the documented rule, written without looking at how `request`
/// does it: non-empty `&`-separated pairs, split at the first `=`, names and values decoded as an
/// HTML form does (`+` a space, `%` and two hex digits a byte, anything else itself), the name
/// compared after decoding; `Err` when two occurrences differ as bytes.
fn token_model(query: &str) -> Result<Option<Vec<u8>>, ()> {
    fn decode(text: &str) -> Vec<u8> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let escape = b[i] == b'%'
                && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if escape {
                let digits = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(digits, 16).unwrap());
                i += 3;
            } else {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
        out
    }
    let mut found: Option<Vec<u8>> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.find('=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, ""),
        };
        if decode(name) != b"token" {
            continue;
        }
        let value = decode(value);
        if found.as_ref().is_some_and(|first| *first != value) {
            return Err(());
        }
        found = Some(value);
    }
    Ok(found)
}
