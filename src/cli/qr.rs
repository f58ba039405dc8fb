//! A join ticket as a QR code in the terminal (`peerstore invite --qr`),
//! so a phone or another machine's camera can take it.
//!
//! Two modules a character (upper and lower half blocks), with the 4-module
//! quiet zone. Terminals mostly draw light text on a dark background, so
//! the characters draw the code's *light* modules (and its quiet zone) and
//! the background shows through as its dark ones, as `qrencode -t UTF8`
//! does; scanners read either way round.

use super::CliError;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// `text` as QR code lines, each ending in a newline.
pub fn render(text: &str) -> Result<String, CliError> {
    let code = QrCode::new(text.as_bytes())
        .map_err(|e| CliError::Invalid(format!("cannot make a QR code of the ticket: {e}")))?;
    let mut out = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reads back the modules [`render`] drew: `true` for dark. A drawn
    /// half is a light module; the last line may hold one row.
    pub(crate) fn modules(drawn: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in drawn.lines() {
            let (top, bottom): (Vec<bool>, Vec<bool>) = line
                .chars()
                .map(|c| match c {
                    '█' => (false, false),
                    '▀' => (false, true),
                    '▄' => (true, false),
                    ' ' => (true, true),
                    other => panic!("unexpected character {other:?} in the QR code"),
                })
                .unzip();
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    /// Decodes a drawn QR code with `rqrr` (each module 4×4 pixels).
    pub(crate) fn decode(drawn: &str) -> String {
        const SCALE: usize = 4;
        let rows = modules(drawn);
        let w = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut img =
            rqrr::PreparedImage::prepare_from_bitmap(w * SCALE, rows.len() * SCALE, |x, y| {
                rows[y / SCALE].get(x / SCALE).copied().unwrap_or(false)
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code expected");
        grids[0].decode().expect("the QR code decodes").1
    }

    #[test]
    fn ticket_round_trips_through_the_qr_code() {
        let ticket = crate::network::Ticket {
            secret: crate::net::NetworkSecret::generate(),
            addr: "192.0.2.10:7400".into(),
        }
        .encode();
        let drawn = render(&ticket).unwrap();
        assert!(drawn.ends_with('\n'));
        assert!(drawn.chars().all(|c| " ▀▄█\n".contains(c)));
        let rows = modules(&drawn);
        // Square, odd-sized (21 + 4k modules and the quiet zone), and the
        // quiet zone is light.
        assert!(rows[0].len() >= 29 && rows[0].len() % 2 == 1);
        assert!(rows[0].iter().all(|dark| !dark));
        assert_eq!(decode(&drawn), ticket);
    }

    #[test]
    fn too_long_text_is_an_error_not_a_panic() {
        let e = render(&"x".repeat(8000)).unwrap_err();
        assert!(e.to_string().contains("cannot make a QR code"), "{e}");
    }
}
