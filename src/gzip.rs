//! gzip for responses whose client asks for it: reading `Accept-Encoding`,
//! and compressing a body that is already whole in memory.
//!
//! Prometheus sends `Accept-Encoding: gzip` with every scrape; the text
//! exposition is repetitive and shrinks to a fraction of its size.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use warp::http::HeaderMap;
use warp::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderValue, VARY};
use warp::reply::{Reply, Response};

/// Whether the request's `Accept-Encoding` headers allow a gzip response, and
/// weigh it at least as much as an uncompressed one (RFC 9110, 12.5.3).
///
/// Codings are matched without regard to case, `x-gzip` counts as `gzip`,
/// a missing weight is `q=1`, and a weight of 0 (or one that does not parse)
/// refuses the coding. `*` stands for every coding not named. Without the
/// header the response stays plain, since nothing says the client can decode.
pub fn accepts_gzip(request_headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut identity = None;
    let mut any = None;
    let mut present = false;
    for value in request_headers.get_all(ACCEPT_ENCODING) {
        present = true;
        // A value that is not visible ASCII cannot name a coding we know.
        let Ok(value) = value.to_str() else { continue };
        for (coding, weight) in value.split(',').filter_map(parse_coding) {
            let slot = match coding.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => &mut gzip,
                "identity" => &mut identity,
                "*" => &mut any,
                _ => continue,
            };
            *slot = Some(weight);
        }
    }
    let gzip = gzip.or(any).unwrap_or(0.0);
    // An uncompressed response is always possible; it competes with gzip
    // only when the client gives it a weight of its own or through `*`.
    let identity = identity.or(any).unwrap_or(0.0);
    present && gzip > 0.0 && gzip >= identity
}

/// Splits one element of `Accept-Encoding`, e.g. ` gzip;q=0.8`, into the
/// coding and its weight. Empty elements (`gzip,,br`) are skipped.
fn parse_coding(element: &str) -> Option<(&str, f32)> {
    let mut parts = element.split(';').map(str::trim);
    let coding = parts.next().filter(|coding| !coding.is_empty())?;
    let mut weight = 1.0;
    for parameter in parts {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            weight = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
        }
    }
    Some((coding, weight))
}

/// A response carrying `body`, gzip-compressed if the request accepts it.
///
/// Either way it says `Vary: Accept-Encoding`, so that a cache between
/// client and service never hands a compressed body to a client that did
/// not ask for one.
pub fn negotiated(request_headers: &HeaderMap, body: Vec<u8>) -> Response {
    let mut response = if accepts_gzip(request_headers) {
        let mut response = compress(&body).into_response();
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        body.into_response()
    };
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// `body` gzip-compressed at the fastest level: a scrape is repeated every
/// few seconds, and the fastest level already takes most of the gain.
fn compress(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    // Writing into a Vec cannot fail; only running out of memory could stop it.
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn headers(accept_encoding: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in accept_encoding {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn gzip_is_chosen_when_allowed() {
        for accept_encoding in [
            "gzip",
            "GZip",
            "x-gzip",
            "deflate, gzip",
            "gzip;q=0.5",
            "gzip ; Q=1.0",
            "*",
            "br;q=1.0, *;q=0.1",
            "gzip, identity;q=0",
            "gzip;q=0.8, identity;q=0.8",
            "identity;q=0.5, gzip",
        ] {
            assert!(
                accepts_gzip(&headers(&[accept_encoding])),
                "Accept-Encoding: {accept_encoding}"
            );
        }
    }

    #[test]
    fn plain_is_chosen_otherwise() {
        for accept_encoding in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip;q=0.000",
            "GZIP; q=0",
            "*;q=0",
            "gzip;q=0, *",
            "gzip;q=0.5, identity",
            "gzip;q=high",
            "gzip;q=2",
            "gzipx",
            ",,",
        ] {
            assert!(
                !accepts_gzip(&headers(&[accept_encoding])),
                "Accept-Encoding: {accept_encoding}"
            );
        }
    }

    #[test]
    fn no_header_means_plain() {
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn repeated_headers_are_read_as_one_list() {
        assert!(accepts_gzip(&headers(&["br", "gzip"])));
        assert!(!accepts_gzip(&headers(&["gzip", "gzip;q=0"])));
    }

    /// The whole body of `response`, which is in memory already.
    fn body_of(response: Response) -> Vec<u8> {
        use warp::hyper::body::Body as _;

        let mut body = response.into_body();
        let mut bytes = Vec::new();
        futures::executor::block_on(async {
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                let frame = frame.expect("an in-memory body cannot fail");
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        });
        bytes
    }

    #[test]
    fn the_compressed_body_decodes_to_the_original() {
        let body = b"# TYPE x counter\nx 1\n".repeat(100);

        let response = negotiated(&headers(&["gzip"]), body.clone());

        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[VARY], "accept-encoding");
        let compressed = body_of(response);
        assert!(compressed.len() < body.len());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, body);
    }

    #[test]
    fn a_plain_response_still_varies_on_accept_encoding() {
        let response = negotiated(&HeaderMap::new(), b"x 1\n".to_vec());

        assert!(response.headers().get(CONTENT_ENCODING).is_none());
        assert_eq!(response.headers()[VARY], "accept-encoding");
        assert_eq!(body_of(response), b"x 1\n");
    }
}
