//! The dashboard and metrics of `peerstore node --http`, in a real
//! browser: a 3-node ring with the endpoint on the mounting node, the page
//! loaded by headless Chromium (Debian's `chromium`; `.ci/run` installs
//! it). The DOM holds one SVG element per member with its ID, a
//! screenshot is not blank, and a member killed with `kill -9` shows as
//! down within 10 s.

mod common;

use common::{NodeOpts, addr, run_tool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BLOCK_DASHBOARD: u8 = 139;
/// How long one browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser binary: Debian's `chromium` (or another Chromium).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found: install Debian's chromium (apt-get install chromium), as .ci/run does"
    );
}

/// Runs headless Chromium on `url` with `args`; its stdout.
fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url);
    let out = run_tool(&mut cmd, BROWSER_TIMEOUT).expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The members `/api/status` lists: (hex ID, up).
async fn members(base: &str) -> Result<Vec<(String, bool)>, String> {
    let body = common::http_get(&format!("{base}/api/status")).await?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["members"]
        .as_array()
        .ok_or("no members")?
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["up"].as_bool().unwrap_or(false),
            )
        })
        .collect())
}

/// The `data-node-id` values in `dom`, and the classes of their elements.
fn dots(dom: &str) -> Vec<(String, String)> {
    dom.split("<circle ")
        .skip(1)
        .filter_map(|el| {
            let el = &el[..el.find('>')?];
            let attr = |name: &str| {
                let at = el.find(&format!("{name}=\""))? + name.len() + 2;
                Some(el[at..at + el[at..].find('"')?].to_string())
            };
            Some((attr("data-node-id")?, attr("class").unwrap_or_default()))
        })
        .collect()
}

/// Whether a PNG shows something: many non-white pixels in several
/// colours, the ring's green among them.
fn not_blank(png_bytes: &[u8]) -> (usize, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0;
    for px in buf[..info.buffer_size()].chunks(channels) {
        let rgb = (px[0], px[1], px[2]);
        if rgb != (255, 255, 255) {
            inked += 1;
        }
        colours.insert(rgb);
    }
    (inked, colours.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_a_browser() {
    common::with_timeout(Duration::from_secs(300), async {
        let browser = chromium();
        let work = tempfile::tempdir().unwrap();
        let identity = work.path().join("identity");
        common::ensure_identity(&identity);
        let http = format!("127.0.{BLOCK_DASHBOARD}.1:{}", common::port() + 80);
        let base = format!("http://{http}");
        let mut first = NodeOpts::mounted(&addr(BLOCK_DASHBOARD, 1), None, &identity);
        first.extra.extend(["--http".to_string(), http.clone()]);
        let mut nodes = common::start_ring(BLOCK_DASHBOARD, 3, first).await;
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        std::fs::write(nodes[0].mount_dir().join("hello.txt"), vec![b'x'; 100_000]).unwrap();

        // Every member surveyed and up.
        common::wait_until(
            "3 members up on the dashboard",
            Duration::from_secs(20),
            || {
                let base = base.clone();
                async move {
                    let m = members(&base).await?;
                    match m.len() == 3 && m.iter().all(|(_, up)| *up) {
                        true => Ok(m),
                        false => Err(format!("{m:?}")),
                    }
                }
            },
        )
        .await;

        // The page in the browser: one SVG element per member, by ID.
        let profile = work.path().join("chromium");
        let dom = browse(&profile, &format!("{base}/"), &["--dump-dom"]);
        let mut shown: Vec<String> = dots(&dom).into_iter().map(|(id, _)| id).collect();
        shown.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(shown, want, "one element per member with its ID");
        assert!(dom.contains("<svg"), "the ring is an SVG");
        assert!(
            dom.contains("class=\"range\""),
            "this node's range is drawn"
        );
        assert!(dom.contains("<h2>Mount</h2>"), "the mount shows");

        // A screenshot that is not blank.
        let shot = work.path().join("dashboard.png");
        browse(
            &profile,
            &format!("{base}/"),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1100,900",
            ],
        );
        let png_bytes = std::fs::read(&shot).expect("a screenshot");
        let (inked, colours) = not_blank(&png_bytes);
        eprintln!("screenshot: {inked} non-white pixels in {colours} colours");
        assert!(inked > 20_000 && colours > 20, "a blank screenshot");
        if let Ok(keep) = std::env::var("PEERSTORE_DASHBOARD_SHOT") {
            std::fs::copy(&shot, keep).expect("copy the screenshot");
        }

        // The metrics, in the Prometheus text format.
        let metrics = common::http_get(&format!("{base}/metrics")).await.unwrap();
        for family in [
            "peerstore_lookup_hops_bucket",
            "peerstore_rpcs_served_total",
            "peerstore_rpcs_sent_total",
            "peerstore_store_bytes",
            "peerstore_repair_backlog",
            "peerstore_cache_reads_total",
            "peerstore_fuse_op_seconds_bucket{op=\"write\"",
            "peerstore_journal_entries",
            "peerstore_conflicts",
        ] {
            assert!(metrics.contains(family), "{family} missing from /metrics");
        }

        // kill -9 one member: down on the page within 10 s.
        let victim = nodes[2].id.clone();
        nodes[2].kill_9();
        let killed = Instant::now();
        let (_, took) = common::wait_until(
            "the killed member shown down",
            Duration::from_secs(10),
            || {
                let (base, victim) = (base.clone(), victim.clone());
                async move {
                    let m = members(&base).await?;
                    match m.iter().any(|(id, up)| *id == victim && !*up) {
                        true => Ok(()),
                        false => Err(format!("{m:?}")),
                    }
                }
            },
        )
        .await;
        let dom = browse(&profile, &format!("{base}/"), &["--dump-dom"]);
        let state = dots(&dom)
            .into_iter()
            .find(|(id, _)| *id == victim)
            .map(|(_, class)| class);
        assert_eq!(
            state.as_deref(),
            Some("member down"),
            "the killed member in the DOM"
        );
        assert!(killed.elapsed() < Duration::from_secs(15));
        assert!(
            dom.contains("Data at risk"),
            "a down member puts data at risk"
        );
        eprintln!(
            "the killed member showed as down after {took:?}; browser: {}",
            browser.display()
        );
    })
    .await;
}
