//! Shell completions for bash, zsh and fish, generated from the clap
//! definition by `clap_complete` and committed under
//! `packaging/completions/` (the Debian package installs them), so they
//! never drift from `--help`.
//!
//! This test generates them and compares them with the committed files.
//! After changing the command line, regenerate them with
//!
//! ```text
//! PEERSTORE_UPDATE_COMPLETIONS=1 cargo test --test completions
//! ```
//!
//! Where bash is installed, the bash script is also loaded into a bash and
//! asked to complete a few command lines.

use clap::CommandFactory;
use clap_complete::Shell;
use peerstore::cli::Cli;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shells, and the file of each under `packaging/completions/`.
const SCRIPTS: [(Shell, &str); 3] = [
    (Shell::Bash, "peerstore.bash"),
    (Shell::Zsh, "_peerstore"),
    (Shell::Fish, "peerstore.fish"),
];

/// Where the committed scripts live.
fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/completions")
}

/// The completion script for `shell`.
fn generate(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "peerstore", &mut out);
    String::from_utf8(out).expect("clap_complete writes UTF-8")
}

#[test]
fn completions_match_the_cli() {
    let update = std::env::var_os("PEERSTORE_UPDATE_COMPLETIONS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (shell, file) in SCRIPTS {
        let script = generate(shell);
        let path = dir().join(file);
        if update {
            std::fs::create_dir_all(dir()).expect("create packaging/completions");
            std::fs::write(&path, &script).expect("write a completion script");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(script.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "packaging/completions/ {stale:?} out of date with the clap definition; regenerate with\n\
         PEERSTORE_UPDATE_COMPLETIONS=1 cargo test --test completions"
    );
}

#[test]
fn completions_know_every_command_and_no_machine_paths() {
    for (shell, file) in SCRIPTS {
        let script = generate(shell);
        for word in ["node", "invite", "ticket-file", "share", "trash", "qr"] {
            assert!(script.contains(word), "{file} does not know {word}");
        }
        if let Some(home) = std::env::var("HOME").ok().filter(|h| h.len() > 1) {
            assert!(
                !script.contains(&home),
                "{file} holds this machine's {home}"
            );
        }
    }
}

/// What the committed bash script offers for the words `line` (the last
/// one being completed); `None` without bash.
fn bash_complete(line: &[&str]) -> Option<Vec<String>> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source '{}' && COMP_WORDS=({}) && COMP_CWORD={} && COMP_LINE='{}' && COMP_POINT=${{#COMP_LINE}} && _peerstore peerstore '{}' '{}' && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        dir().join("peerstore.bash").display(),
        words.join(" "),
        line.len() - 1,
        line.join(" "),
        line[line.len() - 1],
        line[line.len().saturating_sub(2)],
    );
    let mut child = match Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("run bash: {e}"),
    };
    let start = Instant::now();
    while child.try_wait().expect("wait for bash").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bash completion of {line:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("bash output");
    assert!(
        out.status.success(),
        "bash completion of {line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn bash_completes_commands_and_options() {
    let Some(got) = bash_complete(&["peerstore", "inv"]) else {
        eprintln!("no bash here: skipped");
        return;
    };
    assert_eq!(got, ["invite"], "peerstore inv<TAB>");
    let got = bash_complete(&["peerstore", "node", "--ticket-"]).unwrap();
    assert_eq!(got, ["--ticket-file"], "peerstore node --ticket-<TAB>");
    let got = bash_complete(&["peerstore", "block", ""]).unwrap();
    for sub in ["put", "get"] {
        assert!(
            got.iter().any(|w| w == sub),
            "block <TAB> lacks {sub}: {got:?}"
        );
    }
}
