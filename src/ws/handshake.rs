//! Checking that a request to `/ws/<id>` is a websocket opening handshake
//! (RFC 6455, section 4.2.1), and the answer when it is not.

use headers::{Header, SecWebsocketKey};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use warp::reply::{Reply, Response};

/// Why a request to `/ws/<id>` is not upgraded: the status, and the reason
/// the body gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub StatusCode, pub &'static str);

impl Refused {
    const NOT_AN_UPGRADE: Refused =
        Refused(StatusCode::UPGRADE_REQUIRED, "this is a websocket endpoint");
    const BAD_VERSION: Refused = Refused(
        StatusCode::UPGRADE_REQUIRED,
        "websocket version 13 required",
    );
    const BAD_KEY: Refused = Refused(
        StatusCode::BAD_REQUEST,
        "Sec-WebSocket-Key must be the base64 of 16 bytes",
    );
    const ID_TOO_LONG: Refused = Refused(
        StatusCode::URI_TOO_LONG,
        "websocket id longer than 128 bytes",
    );
    pub const NOT_HTTP11: Refused =
        Refused(StatusCode::BAD_REQUEST, "websocket upgrade needs HTTP/1.1");
    pub const FULL: Refused = Refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many websocket clients",
    );
    pub const SHUTTING_DOWN: Refused = Refused(StatusCode::SERVICE_UNAVAILABLE, "shutting down");

    /// The response. A 426 says what to switch to, as RFC 9110 (7.8) and
    /// RFC 6455 (4.4) ask: `Upgrade` with `Connection: upgrade`, and the
    /// version.
    pub fn into_response(self) -> Response {
        let mut response = warp::reply::with_status(self.1, self.0).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// The longest client id accepted, in bytes of the path segment as sent
/// (percent-encoded, as warp passes it on and the session keeps and logs
/// it). The session holds its id for its whole life, so without a bound a
/// client could make every session cost up to the URI limit.
pub const MAX_ID_BYTES: usize = 128;

/// Accepts an id of at most [`MAX_ID_BYTES`].
pub fn check_id(id: &str) -> Result<(), Refused> {
    match id.len() > MAX_ID_BYTES {
        true => Err(Refused::ID_TOO_LONG),
        false => Ok(()),
    }
}

/// The `Sec-WebSocket-Key` of a valid opening handshake.
pub fn key(headers: &HeaderMap) -> Result<SecWebsocketKey, Refused> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refused::NOT_AN_UPGRADE);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refused::BAD_VERSION);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| is_base64_of_16_bytes(key.as_bytes()))
        .ok_or(Refused::BAD_KEY)?;
    SecWebsocketKey::decode(&mut std::iter::once(key)).map_err(|_| Refused::BAD_KEY)
}

/// Whether any `name` header lists `token` (comma-separated, any case), as
/// in `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        let listed = value.to_str().unwrap_or_default().split(',');
        listed
            .map(str::trim)
            .any(|listed| listed.eq_ignore_ascii_case(token))
    })
}

/// 16 bytes encode to 22 base64 characters and two `=` of padding.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    let alphabet = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/';
    key.len() == 24 && key.ends_with(b"==") && key[..22].iter().all(alphabet)
}

#[cfg(test)]
mod tests {
    use headers::{HeaderMapExt, SecWebsocketAccept};

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
            Err(Refused::ID_TOO_LONG)
        );
        // Bytes, not characters: 43 three-byte characters are 129 bytes.
        assert_eq!(check_id(&"€".repeat(43)), Err(Refused::ID_TOO_LONG));
    }

    #[test]
    fn a_valid_handshake_yields_the_accept_key_of_rfc_6455s_example() {
        let mut answer = HeaderMap::new();
        answer.typed_insert(SecWebsocketAccept::from(key(&headers(&VALID)).unwrap()));
        let accept = &answer[header::SEC_WEBSOCKET_ACCEPT];
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_missing_or_wrong_header_has_its_refusal() {
        let cases = [
            (0, ("connection", "keep-alive"), Refused::NOT_AN_UPGRADE),
            (1, ("upgrade", "h2c"), Refused::NOT_AN_UPGRADE),
            (2, ("sec-websocket-version", "8"), Refused::BAD_VERSION),
            (3, ("sec-websocket-key", "short"), Refused::BAD_KEY),
            (
                3,
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=x"),
                Refused::BAD_KEY,
            ),
            (
                3,
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25j!Q=="),
                Refused::BAD_KEY,
            ),
        ];
        for (index, replacement, refusal) in cases {
            let mut pairs = VALID;
            pairs[index] = replacement;
            assert_eq!(key(&headers(&pairs)), Err(refusal), "{replacement:?}");
        }
        assert_eq!(key(&headers(&VALID[..3])), Err(Refused::BAD_KEY));
        assert_eq!(key(&HeaderMap::new()), Err(Refused::NOT_AN_UPGRADE));
    }
}
