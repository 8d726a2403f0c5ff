//! Checking that a request to `/ws/<id>` is a websocket opening handshake
//! (RFC 6455, section 4.2.1), and the responses that refuse one that is not.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use warp::reply::{Reply, Response};

/// Why a request to `/ws/<id>` cannot be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Connection: upgrade` and `Upgrade: websocket`: a plain request.
    NotAnUpgrade,
    /// A websocket version other than 13, the only one there is.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`, or not the base64 of 16 bytes.
    BadKey,
    /// The request came over a protocol that cannot be upgraded (HTTP/1.0).
    NotHttp11,
    /// Every websocket slot is taken.
    Full,
    /// The server is shutting down.
    ShuttingDown,
    /// The id is longer than [`MAX_ID_BYTES`].
    IdTooLong,
}

/// The longest client id accepted, in bytes of the path segment as sent
/// (percent-encoded, as warp passes it on and the session keeps and logs
/// it). The session holds its id for its whole life, so without a bound a
/// client could make every session cost up to the URI limit.
pub const MAX_ID_BYTES: usize = 128;

impl Refusal {
    /// The response that tells the client why, with the headers that say
    /// what would be accepted instead.
    pub fn into_response(self) -> Response {
        // RFC 9110 (7.8): `Upgrade` in a 426 names the protocol to switch
        // to, and `Connection: upgrade` marks it as meant for this hop.
        let upgrade: [(HeaderName, &str); 2] = [
            (header::UPGRADE, "websocket"),
            (header::CONNECTION, "upgrade"),
        ];
        let (status, why, hints): (_, _, &[(HeaderName, &str)]) = match self {
            Refusal::NotAnUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                "this is a websocket endpoint",
                &upgrade,
            ),
            Refusal::UnsupportedVersion => (
                StatusCode::UPGRADE_REQUIRED,
                "websocket version 13 required",
                &[
                    upgrade[0].clone(),
                    upgrade[1].clone(),
                    (header::SEC_WEBSOCKET_VERSION, "13"),
                ],
            ),
            Refusal::BadKey => (
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be the base64 of 16 bytes",
                &[],
            ),
            Refusal::NotHttp11 => (
                StatusCode::BAD_REQUEST,
                "websocket upgrade needs HTTP/1.1",
                &[],
            ),
            Refusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many websocket clients",
                &[],
            ),
            Refusal::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down", &[]),
            Refusal::IdTooLong => (
                StatusCode::URI_TOO_LONG,
                "websocket id longer than 128 bytes",
                &[],
            ),
        };
        let mut response = warp::reply::with_status(why, status).into_response();
        for (name, value) in hints {
            response
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        response
    }
}

/// Accepts an id of at most [`MAX_ID_BYTES`].
pub fn check_id(id: &str) -> Result<(), Refusal> {
    if id.len() > MAX_ID_BYTES {
        return Err(Refusal::IdTooLong);
    }
    Ok(())
}

/// The `Sec-WebSocket-Key` of a valid opening handshake.
pub fn key(headers: &HeaderMap) -> Result<&HeaderValue, Refusal> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refusal::NotAnUpgrade);
    }
    let version = headers.get(header::SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(Refusal::UnsupportedVersion);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| is_base64_of_16_bytes(key.as_bytes()))
        .ok_or(Refusal::BadKey)
}

/// Whether any `name` header lists `token` (comma-separated, any case), as
/// in `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|listed| listed.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// 16 bytes encode to 22 base64 characters and two `=` of padding.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    const VALID: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn ids_are_accepted_up_to_the_limit_and_refused_past_it() {
        assert_eq!(check_id(&"a".repeat(MAX_ID_BYTES)), Ok(()));
        assert_eq!(
            check_id(&"a".repeat(MAX_ID_BYTES + 1)),
            Err(Refusal::IdTooLong)
        );
        // Bytes, not characters: 43 three-byte characters are 129 bytes.
        assert_eq!(check_id(&"€".repeat(43)), Err(Refusal::IdTooLong));
    }

    #[test]
    fn a_valid_handshake_yields_its_key() {
        assert_eq!(key(&headers(&VALID)).unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn each_missing_or_wrong_header_has_its_refusal() {
        let cases = [
            (0, ("connection", "keep-alive"), Refusal::NotAnUpgrade),
            (1, ("upgrade", "h2c"), Refusal::NotAnUpgrade),
            (
                2,
                ("sec-websocket-version", "8"),
                Refusal::UnsupportedVersion,
            ),
            (3, ("sec-websocket-key", "short"), Refusal::BadKey),
            (
                3,
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=x"),
                Refusal::BadKey,
            ),
            (
                3,
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25j!Q=="),
                Refusal::BadKey,
            ),
        ];
        for (index, replacement, refusal) in cases {
            let mut pairs = VALID;
            pairs[index] = replacement;
            assert_eq!(key(&headers(&pairs)), Err(refusal), "{replacement:?}");
        }
        assert_eq!(key(&headers(&VALID[..3])), Err(Refusal::BadKey));
        assert_eq!(key(&HeaderMap::new()), Err(Refusal::NotAnUpgrade));
    }
}
