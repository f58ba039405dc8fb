//! The man pages under `man/` are generated from the clap definition, so
//! they never drift from `--help`.
//!
//! This test renders the pages and compares them with the committed files
//! (a page missing, extra or different fails it). After changing the
//! command line, regenerate them with
//!
//! ```text
//! PEERSTORE_UPDATE_MAN=1 cargo test --test man_page
//! ```
//!
//! `peerstore.1` is the top-level page (name, synopsis, description, global
//! options) followed by a COMMANDS section with one subsection per command
//! (`node`, `block put`, `block get`, `lookup`, `ring`, ...): its
//! description, synopsis and options. Hand-written ENVIRONMENT, FILES,
//! SIGNALS and EXIT STATUS sections and a SEE ALSO list of the command
//! pages close it. Then one page per command, named as clap_mangen names
//! them (`peerstore-node.1`, `peerstore-block.1`, `peerstore-block-put.1`,
//! ...), each pointing back to `peerstore(1)`. The Debian package installs
//! them all (`man peerstore-share`). Pages show the release, not the
//! commit `--version` adds to it.

use clap::CommandFactory;
use clap_mangen::Man;
use peerstore::cli::Cli;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the committed pages live.
fn man_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// The release the pages name.
const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The command line as the pages show it: built (so every subcommand has
/// its `peerstore-...` page name), with the plain release as its version.
fn cli_command() -> clap::Command {
    /// No `help` subcommands: they have no pages.
    fn without_help(cmd: clap::Command) -> clap::Command {
        cmd.disable_help_subcommand(true)
            .mut_subcommands(without_help)
    }
    let mut cmd = without_help(Cli::command().version(RELEASE));
    cmd.build();
    cmd
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
\fBPEERSTORE_TICKET\fR, \fBPEERSTORE_TICKET_FILE\fR
Defaults for \fB\-\-ticket\fR and \fB\-\-ticket\-file\fR of the client
commands (\fB\-\-help\fR never shows the ticket). A ticket on a command line
is visible to every user of the machine: prefer a file of mode 0600.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd for a service with \fBLoadCredential=\fR: a ticket file in
that directory is read whatever its mode (systemd lets only the service's
user read it).
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
\fIDATA\fB/store/packs/\fIn\fB.pack\fR
Records and blocks of at most 64 KiB, appended to a few segment files
(\fIn\fR: 16 hex digits, growing); the oldest is copied forward and
deleted once most of the segments' bytes are replaced or removed items.
.TP
\fIDATA\fB/store/blocks/\fIxx\fB/\fIkey\fR
A bigger block: its owners' claims, then its bytes. \fIkey\fR is the 64
hex digits of the SHA\-256 of the bytes, \fIxx\fR its first two digits.
.TP
\fIDATA\fB/store/records/\fIxx\fB/\fIkey\fR
A signed record, postcard\-encoded, as releases before packs kept it: read,
and moved into the packs at its next change.
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

/// Every command but `help`, parents (`block`) and leaves (`block put`)
/// alike, in definition order.
fn all_commands(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        out.push(sub.clone());
        all_commands(sub, out);
    }
}

/// The page name of a built subcommand: `peerstore-block-put`.
fn page_name(sub: &clap::Command) -> String {
    sub.get_display_name()
        .unwrap_or_else(|| sub.get_name())
        .to_string()
}

/// The page of one command: clap_mangen's, with the portable defaults,
/// the release as its source and a SEE ALSO section.
fn command_page(sub: &clap::Command) -> String {
    let sub = portable(sub.clone());
    let man = Man::new(sub).source(format!("peerstore {RELEASE}"));
    let mut page = section(|w| man.render(w));
    page.insert_str(0, PREAMBLE);
    page.push_str(".SH \"SEE ALSO\"\n\\fBpeerstore\\fR(1)\n");
    page
}

/// The whole top-level page.
fn render() -> String {
    let cmd = cli_command();
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
    let mut commands = Vec::new();
    all_commands(&cmd, &mut commands);
    let refs: Vec<String> = commands
        .iter()
        .map(|c| format!("\\fB{}\\fR(1)", page_name(c).replace('-', "\\-")))
        .collect();
    page.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n")));
    page
}

/// Every page by file name.
fn render_all() -> BTreeMap<String, String> {
    let cmd = cli_command();
    let mut pages = BTreeMap::from([("peerstore.1".to_string(), render())]);
    let mut commands = Vec::new();
    all_commands(&cmd, &mut commands);
    for sub in &commands {
        pages.insert(format!("{}.1", page_name(sub)), command_page(sub));
    }
    pages
}

/// The committed pages (`*.1` in `man/`) by file name.
fn committed() -> BTreeMap<String, String> {
    let Ok(dir) = std::fs::read_dir(man_dir()) else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1"))
        .map(|name| {
            let text = std::fs::read_to_string(man_dir().join(&name)).unwrap_or_default();
            (name, text)
        })
        .collect()
}

#[test]
fn man_pages_match_the_cli() {
    let pages = render_all();
    let have = committed();
    if std::env::var_os("PEERSTORE_UPDATE_MAN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(man_dir()).expect("create man/");
        for name in have.keys().filter(|n| !pages.contains_key(*n)) {
            std::fs::remove_file(man_dir().join(name)).expect("remove a stale page");
        }
        for (name, page) in &pages {
            std::fs::write(man_dir().join(name), page).expect("write a page");
        }
        return;
    }
    let missing: Vec<&String> = pages.keys().filter(|n| !have.contains_key(*n)).collect();
    let extra: Vec<&String> = have.keys().filter(|n| !pages.contains_key(*n)).collect();
    let stale: Vec<&String> = pages
        .iter()
        .filter(|(n, p)| have.get(*n).is_some_and(|h| h != *p))
        .map(|(n, _)| n)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stale.is_empty(),
        "man/ is out of date with the clap definition (missing {missing:?}, not a \
         command any more {extra:?}, different {stale:?}); regenerate it with\n\
         PEERSTORE_UPDATE_MAN=1 cargo test --test man_page"
    );
}

#[test]
fn every_command_has_a_page() {
    let pages = render_all();
    for name in [
        "peerstore.1",
        "peerstore-node.1",
        "peerstore-invite.1",
        "peerstore-block.1",
        "peerstore-block-put.1",
        "peerstore-trash-restore.1",
        "peerstore-user-create.1",
        "peerstore-share.1",
    ] {
        assert!(pages.contains_key(name), "no page {name}");
    }
    let node = &pages["peerstore-node.1"];
    assert!(node.contains(".TH peerstore-node 1"), "{node}");
    for opt in ["ticket\\-file", "join", "mount"] {
        assert!(
            node.contains(&format!("\\-\\-{opt}")),
            "--{opt} not in peerstore-node(1)"
        );
    }
    assert!(node.contains("\\fBpeerstore\\fR(1)"), "no SEE ALSO");
    // Every page names the release, none the commit.
    for (name, page) in &pages {
        assert!(page.contains(&format!("peerstore {RELEASE}")), "{name}");
        assert!(!page.contains("commit"), "{name} names a commit");
        if let Some(home) = std::env::var("HOME").ok().filter(|h| h.len() > 1) {
            assert!(!page.contains(&home), "{name} shows this machine's {home}");
        }
    }
    assert!(pages["peerstore.1"].contains("\\fBpeerstore\\-block\\-put\\fR(1)"));
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
        "listen",
        "join",
        "data",
        "replicas",
        "peer",
        "json",
        "output",
        "ticket",
        "ticket\\-file",
        "addr",
        "qr",
    ] {
        assert!(
            page.contains(&format!("\\-\\-{opt}")),
            "--{opt} not documented"
        );
    }
}
