//! The page: the size of the release WASM (raw, gzip, brotli) and the time from navigation
//! to the first counter message in Debian's chromium (`bench/page/first-message.mjs`).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use flate2::{write::GzEncoder, Compression};
use serde::{Deserialize, Serialize};

use crate::{
    fail,
    procs::{stopping, Proc, StopFlag},
    targets::{self, StreamSettings, Target, Tools},
    util::Result,
};

/// A WASM file bigger than this is taken for a debug build.
const DEBUG_WASM_BYTES: u64 = 3 * 1024 * 1024;

/// One built file's sizes, bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSize {
    /// File name under the package folder.
    pub file: String,
    /// As built.
    pub raw: u64,
    /// gzip -9.
    pub gzip: u64,
    /// brotli, quality 11.
    pub brotli: u64,
}

/// What `first-message.mjs` measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FirstMessage {
    /// Milliseconds from navigation to the first message, per measured navigation.
    #[serde(default)]
    pub runs_ms: Vec<f64>,
    /// Their median.
    #[serde(default)]
    pub median_ms: Option<f64>,
    /// The fastest.
    #[serde(default)]
    pub min_ms: Option<f64>,
    /// The slowest.
    #[serde(default)]
    pub max_ms: Option<f64>,
    /// `DOMContentLoaded` per navigation, milliseconds.
    #[serde(default)]
    pub dom_content_loaded_ms: Vec<f64>,
    /// Navigations that failed, page errors.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// The page scenario's results.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PageResult {
    /// The site measured.
    pub site_root: String,
    /// `*.wasm` under `pkg/`.
    pub wasm: Vec<FileSize>,
    /// The JS and CSS beside it.
    pub other: Vec<FileSize>,
    /// The browser measurement, if it ran.
    pub first_message: Option<FirstMessage>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl PageResult {
    /// Whether the WASM is too big to be a release build.
    pub fn looks_like_debug(&self) -> bool {
        self.wasm.iter().any(|file| file.raw > DEBUG_WASM_BYTES)
    }
}

/// gzip -9 size of `bytes`.
pub fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?.len() as u64)
}

/// brotli (quality 11, 4 MiB window) size of `bytes`.
pub fn brotli_len(bytes: &[u8]) -> Result<u64> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        writer.write_all(bytes)?;
        writer.flush()?;
    }
    Ok(out.len() as u64)
}

/// Sizes of the `.wasm` files (first) and the `.js` and `.css` files in `pkg_dir`.
pub fn sizes(pkg_dir: &Path) -> Result<(Vec<FileSize>, Vec<FileSize>)> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(pkg_dir)
        .map_err(|error| fail!("{}: {error}", pkg_dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    let mut wasm = Vec::new();
    let mut other = Vec::new();
    for path in entries {
        let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
        if !matches!(extension, "wasm" | "js" | "css") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let size = FileSize {
            file: path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            raw: bytes.len() as u64,
            gzip: gzip_len(&bytes)?,
            brotli: brotli_len(&bytes)?,
        };
        if extension == "wasm" {
            wasm.push(size);
        } else {
            other.push(size);
        }
    }
    Ok((wasm, other))
}

/// Measures the page: sizes, then `runs` navigations against a Pulse server on the site.
pub fn measure(tools: &Tools, runs: usize, stop: &StopFlag) -> PageResult {
    let mut result = PageResult {
        site_root: tools.site_root.display().to_string(),
        ..PageResult::default()
    };
    match sizes(&tools.site_root.join("pkg")) {
        Ok((wasm, other)) => {
            result.wasm = wasm;
            result.other = other;
        }
        Err(error) => {
            result.error = Some(error.0);
            return result;
        }
    }
    if stopping(stop) {
        return result;
    }
    match first_message(tools, runs, stop) {
        Ok(first) => result.first_message = Some(first),
        Err(error) => result.error = Some(error.0),
    }
    result
}

fn first_message(tools: &Tools, runs: usize, stop: &StopFlag) -> Result<FirstMessage> {
    let script = tools.repo.join("bench/page/first-message.mjs");
    let playwright = tools.repo.join("end2end/node_modules/@playwright/test");
    for (what, path) in [
        ("node", &tools.node),
        ("chromium", &tools.chromium),
        ("the script", &script),
        ("Playwright (end2end/node_modules)", &playwright),
    ] {
        if !path.exists() {
            return Err(fail!("{what} is missing: {}", path.display()));
        }
    }
    let server = targets::start(Target::Pulse, tools, StreamSettings::default(), "page")?;
    let stream = server
        .stream_url
        .clone()
        .ok_or_else(|| fail!("no stream URL"))?;
    let url = stream.trim_end_matches("stream").to_owned();
    let out = tools.work.join("page-first-message.json");
    let log = tools.work.join("logs/page-node.log");
    let _ = std::fs::remove_file(&out);
    let mut command = Command::new(&tools.node);
    command.arg(&script).args([
        "--url",
        &url,
        "--runs",
        &runs.to_string(),
        "--chromium",
        &tools.chromium.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let mut node = Proc::spawn("node", &mut command, &log, Duration::from_secs(5))?;
    // Each navigation is bounded by the script's own timeout (15 s).
    let deadline = Instant::now() + Duration::from_secs(30 + 16 * (runs as u64 + 1));
    while !node.wait_until(Instant::now() + Duration::from_millis(200)) {
        if stopping(stop) || Instant::now() >= deadline {
            node.stop();
            return Err(fail!("the page measurement did not finish in time"));
        }
    }
    node.stop();
    drop(server);
    let text = std::fs::read_to_string(&out).map_err(|error| {
        fail!(
            "first-message.mjs wrote no results ({error}): {}",
            crate::procs::log_tail(&log, 800)
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_sizes_are_smaller_for_repetitive_data() {
        let data = b"Counter value 1\n".repeat(1000);
        let gzip = gzip_len(&data).unwrap();
        let brotli = brotli_len(&data).unwrap();
        assert!(gzip < data.len() as u64 / 20, "{gzip}");
        assert!(brotli < data.len() as u64 / 20, "{brotli}");
        // Both really are what they say: gzip's magic number and a decodable brotli stream.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&data).unwrap();
        assert_eq!(&encoder.finish().unwrap()[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn lists_wasm_then_js_and_css() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pulse.wasm"), vec![0u8; 4096]).unwrap();
        std::fs::write(dir.path().join("pulse.js"), "export {}").unwrap();
        std::fs::write(dir.path().join("pulse.css"), "a{}").unwrap();
        std::fs::write(dir.path().join("pulse.d.ts"), "x").unwrap();
        let (wasm, other) = sizes(dir.path()).unwrap();
        assert_eq!(wasm.len(), 1);
        assert_eq!(wasm[0].file, "pulse.wasm");
        assert_eq!(wasm[0].raw, 4096);
        assert!(wasm[0].gzip < 100);
        let names: Vec<&str> = other.iter().map(|file| file.file.as_str()).collect();
        assert_eq!(names, ["pulse.css", "pulse.js"]);
        let page = PageResult {
            wasm,
            ..PageResult::default()
        };
        assert!(!page.looks_like_debug());
        assert!(sizes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn reads_the_scripts_output() {
        let first: FirstMessage = serde_json::from_str(
            r#"{"url":"http://127.0.0.1:1/","runs_ms":[120.5,131],"dom_content_loaded_ms":[40],
                "errors":[],"median_ms":125.75,"min_ms":120.5,"max_ms":131}"#,
        )
        .unwrap();
        assert_eq!(first.median_ms, Some(125.75));
        let failed: FirstMessage =
            serde_json::from_str(r#"{"runs_ms":[],"errors":["run 1: timeout"]}"#).unwrap();
        assert_eq!(failed.median_ms, None);
    }
}
