//! Locates the `conclave` executable the sandbox runs.
//!
//! `CONCLAVE_BIN` wins when set; otherwise the binary is taken from the cargo profile directory
//! of the running executable, so `cargo test` and `target/<profile>/bench` both use the build
//! that sits next to them.

use std::path::{Path, PathBuf};

/// Name of the server executable inside a cargo profile directory.
const BINARY_NAME: &str = "conclave";

/// Returns the path of the `conclave` binary, panicking with a how-to when it is missing.
pub fn conclave_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CONCLAVE_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CONCLAVE_BIN points to {}, which is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("cannot resolve the current executable");
    let profile_dir = profile_dir(&exe).unwrap_or_else(|| {
        panic!(
            "cannot find the cargo profile directory above {}; set CONCLAVE_BIN",
            exe.display()
        )
    });
    let path = profile_dir.join(BINARY_NAME);
    assert!(
        path.is_file(),
        "conclave binary not found at {}: run `cargo build -p conclave-node` first \
         (with the same profile), or set CONCLAVE_BIN",
        path.display()
    );
    path
}

/// The profile directory (`target/debug`, `target/release`, ...) holding `exe`: test binaries
/// live in `<profile>/deps/`, examples in `<profile>/examples/`, binaries in `<profile>/`.
fn profile_dir(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    match dir.file_name().and_then(|name| name.to_str()) {
        Some("deps") | Some("examples") => dir.parent().map(Path::to_path_buf),
        _ => Some(dir.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_of_test_and_binary() {
        let test_exe = Path::new("/t/target/debug/deps/cluster-1234");
        assert_eq!(profile_dir(test_exe).unwrap(), Path::new("/t/target/debug"));
        let bin_exe = Path::new("/t/target/release/bench");
        assert_eq!(
            profile_dir(bin_exe).unwrap(),
            Path::new("/t/target/release")
        );
    }
}
