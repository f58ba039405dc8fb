//! The man page `man/peerstore.1` is generated from the clap definition, so
//! it never drifts from `--help`.
//!
//! This test renders the page and compares it with the committed file. After
//! changing the command line, regenerate the file with
//!
//! ```text
//! PEERSTORE_UPDATE_MAN=1 cargo test --test man_page
//! ```
//!
//! The page is the top-level page (name, synopsis, description, global
//! options) followed by a COMMANDS section with one subsection per command
//! (`node`, `block put`, `block get`, `lookup`, `ring`, ...): its
//! description, synopsis and options. Hand-written ENVIRONMENT, FILES,
//! SIGNALS and EXIT STATUS sections close it.

use clap::CommandFactory;
use clap_mangen::Man;
use peerstore::cli::Cli;
use std::path::PathBuf;

/// Where the committed page lives.
fn page_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man/peerstore.1")
}

/// Defaults such as `--data` and `--identity` are computed from
/// `$XDG_DATA_HOME`, `$XDG_CONFIG_HOME` or `$HOME` at run time; the page
/// shows the XDG fallbacks under `~` (`~/.local/share/peerstore`), whatever
/// this machine's paths, and its ENVIRONMENT section gives the rule.
fn portable_path(value: &str) -> Option<String> {
    let dirs = [
        ("XDG_DATA_HOME", "~/.local/share"),
        ("XDG_CONFIG_HOME", "~/.config"),
        ("HOME", "~"),
    ];
    for (var, shown) in dirs {
        let Some(dir) = std::env::var_os(var) else {
            continue;
        };
        let dir = dir.to_string_lossy().trim_end_matches('/').to_string();
        if dir.is_empty() {
            continue;
        }
        if let Some(rest) = value.strip_prefix(&dir)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return Some(format!("{shown}{rest}"));
        }
    }
    None
}

/// `sub` with its machine-dependent defaults rewritten by [`portable_path`].
fn portable(sub: clap::Command) -> clap::Command {
    let changes: Vec<(String, &'static str)> = sub
        .get_arguments()
        .filter_map(|a| {
            let [value] = a.get_default_values() else {
                return None;
            };
            let shown = portable_path(&value.to_string_lossy())?;
            // clap wants a 'static default; the test is short-lived.
            Some((a.get_id().to_string(), &*Box::leak(shown.into_boxed_str())))
        })
        .collect();
    changes.into_iter().fold(sub, |sub, (id, shown)| {
        sub.mut_arg(id, |a| a.default_value(shown))
    })
}

/// The string-quote preamble clap_mangen puts before every section; the
/// page needs it once.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// Renders one roff section with `f` and returns it as text.
fn section(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("rendering into memory cannot fail");
    let text = String::from_utf8(buf).expect("clap_mangen writes UTF-8");
    text.replace(PREAMBLE, "")
}

/// The leaf commands with their full names (`peerstore block put`), in
/// definition order.
fn leaves(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{prefix} {}", sub.get_name());
        if sub.has_subcommands() {
            leaves(sub, &name, out);
        } else {
            out.push((name, sub.clone()));
        }
    }
}

/// One subsection of COMMANDS: the command's description, synopsis and
/// options, with clap_mangen's section headings turned into paragraphs.
fn command_section(name: &str, sub: clap::Command) -> String {
    let man = Man::new(portable(sub.clone()).bin_name(name).display_name(name));
    let mut out = format!(".SS \"{name}\"\n");
    let about = section(|w| man.render_description_section(w));
    let about = about.replacen(".SH DESCRIPTION\n", "", 1);
    if about.trim().is_empty() {
        // No long description: the one-line about is the description.
        if let Some(a) = sub.get_about() {
            out.push_str(&format!("{a}\n"));
        }
    } else {
        out.push_str(&about);
    }
    let synopsis = section(|w| man.render_synopsis_section(w));
    out.push_str(&synopsis.replacen(".SH SYNOPSIS\n", ".PP\n", 1));
    let options = section(|w| man.render_options_section(w));
    out.push_str(&options.replacen(".SH OPTIONS\n", ".PP\n\\fIOptions:\\fR\n", 1));
    out
}

/// Sections clap does not know about.
const HAND_WRITTEN: &str = r#".SH ENVIRONMENT
.TP
\fBPEERSTORE_PEER\fR
Default for \fB\-\-peer\fR of the client commands.
.TP
\fBRUST_LOG\fR
Log filter (env_logger syntax), e.g. \fBdebug\fR or \fBpeerstore=debug\fR.
Default: \fBinfo\fR for \fBnode\fR, \fBwarn\fR for the client commands.
Logs go to standard error.
.TP
\fBXDG_DATA_HOME\fR, \fBXDG_CONFIG_HOME\fR, \fBHOME\fR
Locate the defaults of \fB\-\-data\fR (\fI$XDG_DATA_HOME\fB/peerstore\fR, else
\fI~\fB/.local/share/peerstore\fR) and \fB\-\-identity\fR
(\fI$XDG_CONFIG_HOME\fB/peerstore/identity\fR, else
\fI~\fB/.config/peerstore/identity\fR).
.SH FILES
.TP
\fIDATA\fB/node.key\fR
The node's ed25519 secret key, 32 raw bytes, mode 0600 (a key file readable
by group or others is refused). The node ID is the SHA\-256 of the public
key, so a node restarted on the same data directory returns to the same
place in the ring.
.TP
\fIDATA\fB/store/blocks/\fIxx\fB/\fIkey\fR
A block: its raw bytes. \fIkey\fR is the 64 hex digits of the SHA\-256 of
the bytes, \fIxx\fR its first two digits.
.TP
\fIDATA\fB/store/records/\fIxx\fB/\fIkey\fR
A signed record, postcard\-encoded.
.TP
\fIDATA\fB/store/tmp/\fR
Writes are staged here (written, fsynced, renamed into place); emptied when
the node starts.
.SH SIGNALS
\fBSIGINT\fR and \fBSIGTERM\fR make a node leave the ring gracefully: it
hands every item it holds to its successors, tells its neighbours it is
leaving, hands over what arrived meanwhile, then exits.
.SH "EXIT STATUS"
0 on success. 1 on any error, after a one\-line message on standard error.
2 for a usage error.
"#;

/// The whole page.
fn render() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let man = Man::new(cmd.clone());
    let mut page = String::from(PREAMBLE);
    page.push_str(&section(|w| man.render_title(w)));
    page.push_str(&section(|w| man.render_name_section(w)));
    page.push_str(&section(|w| man.render_synopsis_section(w)));
    page.push_str(&section(|w| man.render_description_section(w)));
    page.push_str(&section(|w| man.render_options_section(w)));
    // clap_mangen's own SUBCOMMANDS section points at one page per command
    // (peerstore-node(1), ...); this page holds them all instead.
    let mut subs = Vec::new();
    leaves(&cmd, cmd.get_name(), &mut subs);
    page.push_str(".SH COMMANDS\n");
    for (name, sub) in subs {
        page.push_str(&command_section(&name, sub));
    }
    page.push_str(HAND_WRITTEN);
    page.push_str(&section(|w| man.render_version_section(w)));
    page
}

#[test]
fn man_page_matches_the_cli() {
    let page = render();
    let path = page_path();
    if std::env::var_os("PEERSTORE_UPDATE_MAN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("man/ has a parent")).expect("create man/");
        std::fs::write(&path, &page).expect("write man/peerstore.1");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "man/peerstore.1 is out of date with the clap definition; regenerate it with\n\
         PEERSTORE_UPDATE_MAN=1 cargo test --test man_page"
    );
}

#[test]
fn man_page_documents_every_command() {
    let page = render();
    for name in [
        "peerstore node",
        "peerstore block put",
        "peerstore block get",
        "peerstore lookup",
        "peerstore ring",
        "peerstore init",
        "peerstore invite",
    ] {
        assert!(
            page.contains(&format!(".SS \"{name}\"")),
            "no section for {name}"
        );
    }
    for opt in [
        "listen", "join", "data", "replicas", "peer", "json", "output", "ticket", "addr",
    ] {
        assert!(
            page.contains(&format!("\\-\\-{opt}")),
            "--{opt} not documented"
        );
    }
}
