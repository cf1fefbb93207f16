//! Where a bundle's detached signature lives.

use std::path::{Path, PathBuf};

/// The signature file that pairs with `bundle`, following the export side's
/// naming: `X.zst` -> `X.sig.bin`, `X.tar.zst` -> `X.tar.sig.bin`; any other
/// name gets `.sig.bin` appended so the pairing is never ambiguous.
pub fn signature_path_for(bundle: &Path) -> PathBuf {
    if bundle.extension().is_some_and(|ext| ext == "zst") {
        bundle.with_extension("sig.bin")
    } else {
        let mut name = bundle.as_os_str().to_owned();
        name.push(".sig.bin");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(bundle: &str) -> PathBuf {
        signature_path_for(Path::new(bundle))
    }

    #[test]
    fn zst_suffix_is_replaced() {
        assert_eq!(pair("x.zst"), PathBuf::from("x.sig.bin"));
        assert_eq!(
            pair("/media/usb/x.zst"),
            PathBuf::from("/media/usb/x.sig.bin")
        );
    }

    #[test]
    fn only_the_last_extension_is_replaced() {
        assert_eq!(
            pair("images-2024.tar.zst"),
            PathBuf::from("images-2024.tar.sig.bin")
        );
        assert_eq!(pair("v1.2.3.zst"), PathBuf::from("v1.2.3.sig.bin"));
    }

    #[test]
    fn other_names_get_the_suffix_appended() {
        assert_eq!(pair("bundle.tar"), PathBuf::from("bundle.tar.sig.bin"));
        assert_eq!(pair("bundle"), PathBuf::from("bundle.sig.bin"));
        assert_eq!(pair("bundle.zstd"), PathBuf::from("bundle.zstd.sig.bin"));
        assert_eq!(pair(".zst"), PathBuf::from(".zst.sig.bin"));
    }
}
