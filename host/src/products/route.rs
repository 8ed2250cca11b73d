//! Which product a gateway path is for, and what of the path a trace may
//! show.
//!
//! Query strings are never shown: M3 keys, IDO filters and Data Lake ids
//! travel there, and they are record data. A path is shown whole only when
//! it has one of the shapes of this folder (M3 execute, IDO load/update,
//! ION messaging, Data Lake, Compass, IFS), whose segments are program,
//! transaction and collection names from the pipeline's configuration. Any
//! other path (a `gateway` source or sink) may be rendered from a record's
//! fields, so only its product, the first segment, is shown.

use super::{data_lake, ifs, ion, m3};

/// What a trace says about a call's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route<'a> {
    /// `m3`, `ido`, `ion`, `datalake`, `compass`, `ifs`, or the first path
    /// segment of another product as written (`LN`; `other` when it is not
    /// a plain name of at most 40 characters, as in the metrics' label).
    pub product: &'a str,
    /// The path below `{iu}/{ti}/`, when it has a known shape.
    pub path: Option<&'a str>,
    pub program: Option<&'a str>,
    pub transaction: Option<&'a str>,
    pub collection: Option<&'a str>,
}

impl<'a> Route<'a> {
    pub fn of(path: &'a str) -> Route<'a> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.trim_start_matches('/');
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let known = |product| Route {
            product,
            path: Some(path),
            ..Route::default()
        };
        match segments.as_slice() {
            ["M3", "m3api-rest", "v2", "execute", program, transaction]
                if name(program) && name(transaction) =>
            {
                Route {
                    program: Some(program),
                    transaction: Some(transaction),
                    ..known("m3")
                }
            }
            _ if path == m3::BULK_PATH => known("m3"),
            [
                "CSI",
                "IDORequestService",
                "ido",
                "load" | "update",
                collection,
            ] if name(collection) => Route {
                collection: Some(collection),
                ..known("ido")
            },
            _ if path == ion::MESSAGE_PATH || path == ion::MULTIPART_PATH => known("ion"),
            _ if path == data_lake::LIST_PATH || path == data_lake::STREAM_PATH => {
                known("datalake")
            }
            _ if path == ifs::USERS_ME_PATH => known("ifs"),
            // Submitting a query, or its status or result by query id (an
            // id Compass gave, not data).
            ["DATAFABRIC", "compass", "v2", "jobs", rest @ ..]
                if rest.len() <= 2 && rest.iter().all(|s| name(s)) =>
            {
                known("compass")
            }
            ["M3", ..] => unknown("m3"),
            ["CSI", ..] => unknown("ido"),
            ["DATAFABRIC", ..] => unknown("compass"),
            [first, ..] if name(first) && first.len() <= 40 => unknown(first),
            _ => unknown("other"),
        }
    }
}

fn unknown(product: &str) -> Route<'_> {
    Route {
        product,
        ..Route::default()
    }
}

/// A program, transaction or collection name: letters, digits, `_`, `-`,
/// `.`, at most 64 characters. Anything else (spaces, percent escapes) is
/// not a name and is not shown.
fn name(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::compass;

    #[test]
    fn m3_and_ido_paths_name_their_program_transaction_and_collection() {
        let r = Route::of("M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm");
        assert_eq!(r.product, "m3");
        assert_eq!(r.program, Some("MMS200MI"));
        assert_eq!(r.transaction, Some("LstItmByItm"));
        assert_eq!(
            r.path,
            Some("M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm")
        );
        let r = Route::of("/CSI/IDORequestService/ido/load/SLItems?filter=Item%3D'A1'");
        assert_eq!(r.product, "ido");
        assert_eq!(r.collection, Some("SLItems"));
        assert_eq!(r.path, Some("CSI/IDORequestService/ido/load/SLItems"));
        assert_eq!(Route::of(m3::BULK_PATH).path, Some(m3::BULK_PATH));
    }

    #[test]
    fn known_product_paths_are_shown_without_their_query() {
        assert_eq!(Route::of(ion::MESSAGE_PATH).product, "ion");
        let stream = format!("{}?datalakeId=SECRET-ID", data_lake::STREAM_PATH);
        let r = Route::of(&stream);
        assert_eq!(r.product, "datalake");
        assert_eq!(r.path, Some(data_lake::STREAM_PATH));
        assert_eq!(Route::of(&compass::status_path("q-123")).product, "compass");
        assert_eq!(
            Route::of(&compass::result_path("q-123")).path,
            Some("DATAFABRIC/compass/v2/jobs/q-123/result/")
        );
        assert_eq!(Route::of(ifs::USERS_ME_PATH).product, "ifs");
    }

    #[test]
    fn other_paths_show_their_product_only() {
        // A gateway sink's path rendered from a record's fields.
        let r = Route::of("LN/lnapi/odata/txsls.SalesOrders('SO-4711 ACME')");
        assert_eq!(r, unknown("LN"));
        assert_eq!(
            Route::of("M3/m3api-rest/v2/execute/MMS200MI/A B").path,
            None
        );
        assert_eq!(
            Route::of("CSI/IDORequestService/ido/invoke/SLItems/x").path,
            None
        );
        assert_eq!(Route::of("Custom_1/x/y").product, "Custom_1");
        assert_eq!(Route::of("a%20b/x").product, "other");
        assert_eq!(Route::of("").product, "other");
        assert_eq!(Route::of(&"x".repeat(41)).product, "other");
    }
}
