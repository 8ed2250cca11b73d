//! The WIT package that connector components implement, embedded so that
//! `ionflow connector export --wit` can hand it to other hosts unchanged.

/// The package name and version, as declared in every file of `wit/`.
pub const WIT_PACKAGE: &str = "ionflow:gateway@0.1.0";

/// Every file of `wit/`, by file name.
pub const WIT_FILES: &[(&str, &str)] = &[
    ("auth.wit", include_str!("../../../wit/auth.wit")),
    ("gateway.wit", include_str!("../../../wit/gateway.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    (
        "token-store.wit",
        include_str!("../../../wit/token-store.wit"),
    ),
    ("transport.wit", include_str!("../../../wit/transport.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_is_embedded_and_declares_the_package() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = WIT_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded, "add new wit/ files to WIT_FILES");
        for (name, text) in WIT_FILES {
            assert!(
                text.starts_with(&format!("package {WIT_PACKAGE};")),
                "{name} must start with `package {WIT_PACKAGE};`"
            );
        }
    }
}
