//! The dashboard page: one HTML document rendered from a [`Status`], with
//! the ring drawn as SVG (no script, nothing fetched from elsewhere; it
//! reloads itself every [`REFRESH_SECS`]).
//!
//! The picture: every member is a dot at the angle of its ID (the top is
//! 0, clockwise), with `data-node-id` = its hex ID; green when it answered
//! the last probe, red when it is suspected down. This node's dot is
//! ringed and its key range `(predecessor, self]` is the thick orange arc.
//! Inside the circle, each member's successor arc; outside, each member's
//! replica arc (itself and the next r − 1 members, where its keys' copies
//! live).

use super::status::Status;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use std::f64::consts::{PI, TAU};
use std::fmt::Write;

/// Seconds between reloads of the page.
pub const REFRESH_SECS: u32 = 3;

/// Centre and radius of the ring in the SVG.
const C: f64 = 230.0;
const R: f64 = 160.0;

/// Where on the ring an ID is: radians clockwise from the top.
fn angle(hex: &str) -> f64 {
    let top = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    top as f64 / 2f64.powi(64) * TAU
}

/// The point at `a` radians on a circle of radius `r`.
fn point(a: f64, r: f64) -> (f64, f64) {
    (C + r * a.sin(), C - r * a.cos())
}

/// An SVG path along the circle of radius `r` clockwise from `a` to `b`
/// (the whole circle if they coincide).
fn arc(a: f64, b: f64, r: f64) -> String {
    let span = (b - a).rem_euclid(TAU);
    if span < 1e-9 {
        let (x, y) = point(a, r);
        let (x2, y2) = point(a + PI, r);
        return format!(
            "M{x:.1},{y:.1} A{r},{r} 0 1 1 {x2:.1},{y2:.1} A{r},{r} 0 1 1 {x:.1},{y:.1}"
        );
    }
    let (x1, y1) = point(a, r);
    let (x2, y2) = point(b, r);
    let large = u8::from(span > PI);
    format!("M{x1:.1},{y1:.1} A{r},{r} 0 {large} 1 {x2:.1},{y2:.1}")
}

/// Bytes for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The ring as SVG.
pub(crate) fn ring_svg(s: &Status) -> String {
    let size = 2.0 * C;
    let mut out = format!(
        "<svg id=\"ring\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\" role=\"img\" aria-label=\"the ring\">"
    );
    let _ = write!(
        out,
        "<circle cx=\"{C}\" cy=\"{C}\" r=\"{R}\" fill=\"none\" stroke=\"#ccc\" stroke-width=\"2\"/>"
    );
    if let Some((from, to)) = &s.range {
        let _ = write!(
            out,
            "<path class=\"range\" d=\"{}\" fill=\"none\" stroke=\"#f4a261\" stroke-width=\"10\"><title>keys this node owns</title></path>",
            arc(angle(from), angle(to), R)
        );
    }
    let r = s.replicas.max(1) as usize;
    for (i, m) in s.members.iter().enumerate().filter(|(_, m)| m.up) {
        let a = angle(&m.id);
        if let Some(next) = m.succs.first() {
            let _ = write!(
                out,
                "<path class=\"succ-arc\" d=\"{}\" fill=\"none\" stroke=\"#8d99ae\" stroke-width=\"1.5\"/>",
                arc(a, angle(next), R - 14.0)
            );
        }
        // The copies of its keys: itself and its next r − 1 successors.
        if let Some(last) = m.succs.get(r.saturating_sub(2)).filter(|_| r > 1) {
            let radius = R + 14.0 + 5.0 * (i % 4) as f64;
            let _ = write!(
                out,
                "<path class=\"replica-arc\" d=\"{}\" fill=\"none\" stroke=\"#457b9d\" stroke-opacity=\"0.45\" stroke-width=\"3\"/>",
                arc(a, angle(last), radius)
            );
        }
    }
    for m in &s.members {
        let a = angle(&m.id);
        let (x, y) = point(a, R);
        let (class, fill) = match m.up {
            true => ("member up", "#2a9d8f"),
            false => ("member down", "#e63946"),
        };
        let me = if m.me { " me" } else { "" };
        let ring = if m.me {
            " stroke=\"#1d3557\" stroke-width=\"4\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<circle class=\"{class}{me}\" data-node-id=\"{}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"9\" fill=\"{fill}\"{ring}><title>{} {} ({})</title></circle>",
            attr(&m.id),
            text(&m.id[..8.min(m.id.len())]),
            text(&m.addr),
            if m.up { "up" } else { "suspected down" }
        );
        let (lx, ly) = point(a, R - 34.0);
        let _ = write!(
            out,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"11\" text-anchor=\"middle\" dominant-baseline=\"middle\">{}</text>",
            text(&m.id[..8.min(m.id.len())])
        );
    }
    out.push_str("</svg>");
    out
}

/// The whole page.
pub fn render(s: &Status) -> String {
    let short = &s.id[..8.min(s.id.len())];
    let mut h = String::with_capacity(16 << 10);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>PeerStore node {short}</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>PeerStore node <code>{}</code> <small>{}</small></h1>",
        text(short),
        text(&s.addr)
    );
    if s.safety.safe {
        let _ = write!(
            h,
            "<p id=\"safety\" class=\"banner safe\">Data safe: every item is at {} copies.</p>",
            s.replicas
        );
    } else {
        h.push_str("<div id=\"safety\" class=\"banner risk\"><b>Data at risk:</b><ul>");
        for r in &s.safety.reasons {
            let _ = write!(h, "<li>{}</li>", text(r));
        }
        h.push_str("</ul></div>");
    }
    h.push_str("<div class=\"row\">");
    h.push_str(&ring_svg(s));
    h.push_str("<div><h2>This node</h2><table>");
    let l = &s.levels;
    let row = |h: &mut String, k: &str, v: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{}</td></tr>", text(&v));
    };
    row(
        &mut h,
        "Ring",
        if s.member {
            format!("member, {} members seen", s.members.len())
        } else {
            "not a member (joining or cut off)".into()
        },
    );
    if let Some((from, to)) = &s.range {
        row(
            &mut h,
            "Key range",
            format!("({}…, {}…]", &from[..8], &to[..8]),
        );
    }
    row(
        &mut h,
        "Stored",
        format!(
            "{} blocks, {} records, {}",
            l.blocks,
            l.records,
            bytes(l.bytes_stored)
        ),
    );
    row(
        &mut h,
        "Repair",
        match l.repair_age_secs {
            -1 => "no pass yet".into(),
            age => format!(
                "last pass {age} s ago: {} copied, {} left short",
                l.repair_copied, l.repair_backlog
            ),
        },
    );
    if s.mount.is_some() {
        row(&mut h, "Uploads in flight", l.uploads_in_flight.to_string());
        row(
            &mut h,
            "Cache",
            format!("{} of {}", bytes(l.cache_bytes), bytes(l.cache_capacity)),
        );
        row(
            &mut h,
            "Journal",
            format!("{} writes, {}", l.journal_entries, bytes(l.journal_bytes)),
        );
    }
    h.push_str("</table></div></div>");

    h.push_str("<h2>Members</h2><table id=\"members\"><tr><th>ID</th><th>Address</th><th>State</th><th>Blocks</th><th>Records</th><th>Bytes</th><th>Last repair</th></tr>");
    for m in &s.members {
        let state = match (m.up, m.last_ok_ms) {
            (true, _) => "up".to_string(),
            (false, Some(ms)) => format!("down (last answer {} s ago)", ms / 1000),
            (false, None) => "down (never answered)".into(),
        };
        let repair = match m.repair {
            None => "none yet".into(),
            Some(r) => format!(
                "{} s ago, {} copied, {} short",
                r.age_ms / 1000,
                r.copied,
                r.backlog
            ),
        };
        let _ = write!(
            h,
            "<tr class=\"{}\"><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if m.up { "up" } else { "down" },
            text(&m.id[..8.min(m.id.len())]),
            if m.me { " (this node)" } else { "" },
            text(&m.addr),
            text(&state),
            m.blocks,
            m.records,
            text(&bytes(m.bytes)),
            text(&repair)
        );
    }
    h.push_str("</table>");

    if let Some(mount) = &s.mount {
        let open: Vec<_> = mount.open_conflicts().collect();
        let _ = write!(
            h,
            "<h2>Mount</h2><p>{} — {}, {} pinned</p>",
            text(&mount.dir),
            if mount.local.online {
                "online"
            } else {
                "offline: writes go to the journal"
            },
            text(&bytes(mount.local.pinned_bytes))
        );
        let _ = write!(h, "<h3>Open conflicts ({})</h3>", open.len());
        if open.is_empty() {
            h.push_str("<p>None.</p>");
        } else {
            h.push_str("<ul>");
            for c in open {
                let _ = write!(h, "<li>{} — kept as {}</li>", text(&c.path), text(&c.copy));
            }
            h.push_str("</ul>");
        }
    }
    if let Some(sh) = &s.shares {
        h.push_str("<h2>Shares</h2><table><tr><th>Folder</th><th>With</th><th>Access</th></tr>");
        let given = sh.given.iter().map(|(p, to, w)| (p, to.clone(), w));
        let received = (sh.received.iter()).map(|(p, from, w)| (p, format!("from {from}"), w));
        for (path, who, write) in given.chain(received) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(path),
                text(&who),
                if *write { "read-write" } else { "read-only" }
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<footer>Reloads every {REFRESH_SECS} s. <a href=\"/api/status\">/api/status</a> · <a href=\"/metrics\">/metrics</a></footer></body></html>"
    );
    h
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1d3557;background:#fff}\
h1 small{font-weight:normal;color:#666}\
.banner{padding:.6em 1em;border-radius:6px;font-weight:600}\
.banner ul{margin:.3em 0 0 0;font-weight:normal}\
.safe{background:#d8f3dc;color:#1b4332}.risk{background:#ffccd5;color:#7f1d1d}\
.row{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}\
table{border-collapse:collapse}th,td{padding:.25em .7em;text-align:left;border-bottom:1px solid #eee}\
tr.down td{color:#e63946}footer{margin-top:2em;color:#666;font-size:.9em}";

#[cfg(test)]
mod tests {
    use super::super::status::{Member, Safety};
    use super::*;
    use crate::metrics::Levels;

    fn member(id: &str, up: bool, succs: &[&str]) -> Member {
        Member {
            id: id.repeat(64 / id.len()),
            addr: "127.0.0.1:7400".into(),
            up,
            me: id == "1",
            blocks: 1,
            records: 1,
            bytes: 1,
            succs: succs.iter().map(|s| s.repeat(64 / s.len())).collect(),
            repair: None,
            last_ok_ms: Some(0),
        }
    }

    fn status() -> Status {
        Status {
            id: "1".repeat(64),
            addr: "127.0.0.1:7400".into(),
            member: true,
            range: Some(("c".repeat(64), "1".repeat(64))),
            replicas: 3,
            members: vec![
                member("1", true, &["5", "c"]),
                member("5", false, &["c", "1"]),
                member("c", true, &["1", "5"]),
            ],
            safety: Safety {
                safe: false,
                reasons: vec!["<script>x</script> is down".into()],
            },
            levels: Levels::default(),
            mount: None,
            shares: None,
        }
    }

    #[test]
    fn one_dot_per_member_with_its_id_and_state() {
        let page = render(&status());
        assert_eq!(page.matches("data-node-id=").count(), 3);
        assert!(page.contains(&format!("data-node-id=\"{}\"", "5".repeat(64))));
        assert_eq!(page.matches("class=\"member down\"").count(), 1);
        assert_eq!(page.matches("class=\"member up me\"").count(), 1);
        assert_eq!(page.matches("class=\"range\"").count(), 1);
        // Successor and replica arcs of the live members only.
        assert_eq!(page.matches("class=\"succ-arc\"").count(), 2);
        assert_eq!(page.matches("class=\"replica-arc\"").count(), 2);
        // Text from the ring is escaped.
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn angles_and_arcs() {
        assert_eq!(angle(&"0".repeat(64)), 0.0);
        assert!((angle(&format!("8{}", "0".repeat(63))) - PI).abs() < 1e-12);
        // Top of the circle, then a quarter turn clockwise is to the right.
        let (x, y) = point(0.0, R);
        assert!((x - C).abs() < 1e-9 && (y - (C - R)).abs() < 1e-9);
        let (x, _) = point(PI / 2.0, R);
        assert!((x - (C + R)).abs() < 1e-9);
        assert!(arc(0.0, 4.0, R).contains(" 0 1 1 "), "a long arc");
        assert!(arc(0.0, 1.0, R).contains(" 0 0 1 "), "a short arc");
        assert_eq!(arc(1.0, 1.0, R).matches('A').count(), 2, "a full circle");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12), "12 B");
    }
}
