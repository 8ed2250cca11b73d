//! `multipart/form-data` bodies (RFC 7578), read strictly: the boundary
//! from the content type, CRLF line ends, a `Content-Disposition:
//! form-data; name="..."` header in every part, and the closing delimiter.
//! A client whose body passes here builds it as the RFC says.
//!
//! Public shape followed: RFC 7578 and RFC 2046 section 5.1.1, the format
//! of ION Messaging's `v2/multipartMessage`.

/// One part of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormPart {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// More parts than any message has: a hostile body is refused early.
const MAX_PARTS: usize = 16;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "Content-Type must be multipart/form-data, not {}",
            super::codec::clip(kind, 60)
        ));
    }
    let boundary = params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .ok_or("Content-Type multipart/form-data has no boundary")?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err("The multipart boundary must be 1 to 70 characters".into());
    }
    Ok(boundary)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The parts of `body`, delimited by `boundary`.
pub(crate) fn parse(boundary: &str, body: &[u8]) -> Result<Vec<FormPart>, String> {
    let delimiter = format!("--{boundary}");
    let first = find(body, delimiter.as_bytes(), 0)
        .ok_or("The body does not contain the multipart boundary")?;
    let separator = format!("\r\n--{boundary}");
    let mut at = first + delimiter.len();
    let mut parts = Vec::new();
    loop {
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err("A multipart delimiter is not followed by CRLF or --".into()),
        }
        if parts.len() == MAX_PARTS {
            return Err(format!("More than {MAX_PARTS} parts"));
        }
        let end = find(body, separator.as_bytes(), at)
            .ok_or("The multipart body has no closing delimiter")?;
        parts.push(part(&body[at..end])?);
        at = end + separator.len();
    }
}

fn part(raw: &[u8]) -> Result<FormPart, String> {
    let split = find(raw, b"\r\n\r\n", 0)
        .map(|i| (i, i + 4))
        .or_else(|| raw.starts_with(b"\r\n").then_some((0, 2)))
        .ok_or("A part has no blank line after its headers")?;
    let headers = std::str::from_utf8(&raw[..split.0])
        .map_err(|_| "A part's headers are not UTF-8".to_owned())?;
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("Malformed part header {}", super::codec::clip(line, 60)))?;
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            let mut params = value.split(';');
            if !params
                .next()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data"))
            {
                return Err("A part's Content-Disposition is not form-data".into());
            }
            for param in params {
                if let Some((k, v)) = param.split_once('=') {
                    let v = v.trim().trim_matches('"').to_owned();
                    match k.trim() {
                        "name" => name = Some(v),
                        "filename" => filename = Some(v),
                        _ => {}
                    }
                }
            }
        } else if key.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    Ok(FormPart {
        name: name.ok_or("A part has no Content-Disposition name")?,
        filename,
        content_type,
        body: raw[split.1..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_with_their_names_and_bytes() {
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"ParameterRequest\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--b1\r\nContent-Disposition: form-data; name=\"MessagePayload\"; filename=\"doc\"\r\n\r\n<x>\r\n--b\r\n</x>\r\n--b1--\r\n";
        let parts = parse("b1", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "ParameterRequest");
        assert_eq!(parts[0].body, b"{\"a\":1}");
        assert_eq!(parts[1].filename.as_deref(), Some("doc"));
        assert_eq!(parts[1].body, b"<x>\r\n--b\r\n</x>");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"b1\"").unwrap(),
            "b1"
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/form-data").is_err());
        assert!(parse("b", b"no boundary here").is_err());
        assert!(
            parse(
                "b",
                b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nbody"
            )
            .is_err()
        );
        assert!(parse("b", b"--b\r\nX-Other: 1\r\n\r\nbody\r\n--b--").is_err());
        let many =
            "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n".repeat(20) + "--b--";
        assert!(
            parse("b", many.as_bytes())
                .unwrap_err()
                .contains("More than")
        );
    }
}
