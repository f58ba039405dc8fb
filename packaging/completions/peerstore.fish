# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_peerstore_global_optspecs
    string join \n h/help V/version
end

function __fish_peerstore_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_peerstore_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_peerstore_using_subcommand
    set -l cmd (__fish_peerstore_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c peerstore -n "__fish_peerstore_needs_command" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_needs_command" -s V -l version -d 'Print version'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "node" -d 'Run a ring node (until SIGINT/SIGTERM, then leave gracefully)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "init" -d 'Create a new network (its secret) in a data directory'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "invite" -d 'Print a join ticket for the network of a data directory'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "block" -d 'Store and fetch raw blocks'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "lookup" -d 'Find the node that owns a key'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "put" -d 'Copy a local file into the store at PATH (as seen in the mount)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "get" -d 'Copy the file at PATH out of the store'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "versions" -d 'List the versions of the file at PATH: the ones overwrites kept, oldest first, then the current one'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "trash" -d 'Deleted files: list, restore, empty'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "ls" -d 'List a directory of the store (default: the root)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "rm" -d 'Remove a file, link or empty directory (-r: a whole tree)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "backup" -d 'Copy a local directory tree into the store (default: the root)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "restore" -d 'Copy a store directory tree out to a local directory'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "ring" -d 'Walk the ring and print every member'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "status" -d 'Show a node\'s ring contact and its folder\'s open conflict copies, offline journal and pinned paths'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "pin" -d 'Keep a subtree of the node\'s mounted folder in this machine\'s caches, so it reads while the ring is out of reach'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "unpin" -d 'Stop keeping a pinned subtree (its data may leave the caches)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "user" -d 'Accounts on the ring'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "share" -d 'Share a folder of your tree with another account: it sees it as /shared/YOU/NAME in its paths and its mount'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "unshare" -d 'Revoke an account\'s access to a folder you share: the folder moves to new names and keys (each file\'s content gets a new key at its next write, or at once with --eager), so nothing written afterwards is readable with what it held; the other grantees get the new keys'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "shares" -d 'List what you share with whom, and what is shared with you'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "login" -d 'Log this machine in as an account: the node\'s mount and the client commands then act as it (the password is read from the terminal)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "logout" -d 'Log this machine out (remove its session; a running node keeps its keys until it stops)'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "whoami" -d 'Show whose tree the commands act on: an identity file, the account logged in, or this machine\'s own identity'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "passwd" -d 'Change the password of the account logged in on this machine: its keyring is sealed again; the old password stops working, the tree is unchanged'
complete -c peerstore -n "__fish_peerstore_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l listen -d 'Address to listen on' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l advertise -d 'Address other nodes reach this one at (default: the listen address)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l data -d 'Data directory (node key and stored blocks)' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l join -d 'Join ticket (from `peerstore invite`) of the ring to join, or @FILE for the ticket in FILE; a node whose data directory already holds the network secret (or that is given --ticket-file) may give a member\'s address instead. Without it a new ring starts (and, if the data directory has no network yet, a new network)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it) and join through the member it names (or --join ADDR). An empty file counts as no ticket: the data directory must then hold the network secret already' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l replicas -d 'Copies kept of every block and record' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l successors -d 'Successor list length (at least --replicas)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l repair-secs -d 'Seconds between repair passes' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l orphan-check-secs -d 'Seconds between the mount\'s orphan checks (blocks of this owner that no version refers to are released)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l orphan-grace-secs -d 'Blocks claimed less than this many seconds ago are never taken for orphans (they may belong to a save under way)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l retention -d 'How long the versions an overwrite replaces and the files in the trash are kept (e.g. 30d, 12h, 90s; 0 keeps none: overwrites and deletes free their space at once). The orphan check frees them after that' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l clock-skew-secs -d 'Seconds added to this machine\'s clock for the times the node stamps (tests of machines whose clocks disagree)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l stabilize-ms -d 'Stabilize period in milliseconds' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l rpc-timeout-ms -d 'Timeout of every call to a peer, in milliseconds' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l handshake-timeout-ms -d 'Time a new connection has to finish the secure-link handshake, in milliseconds' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l mount -d 'Mount the file tree at this folder (unmounting it stops the node)' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l cache-size -d 'Local block cache size in bytes (with --mount)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l http -d 'Serve the dashboard (`/`), `/metrics` (Prometheus) and `/api/status` at this address, e.g. 127.0.0.1:7480 (loopback only unless --http-allow-remote)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l write-back -d 'Write-back (experimental): the mount\'s writes, `close` and `fsync` return once they are in the journal on local disk, which survives a crash; the journal sends them to the ring at once, and before the node leaves. Other machines see a change once it is sent. Without it (write-through), a write is on the ring when it returns'
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l allow-other -d 'Let other local users use the mounted folder (FUSE `allow_other`), with permissions checked by mode and owner as on a local disk (a node not run by root needs `user_allow_other` in /etc/fuse.conf)'
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -l http-allow-remote -d 'Let --http listen on an address other machines can reach (they read the ring\'s layout and this node\'s counts)'
complete -c peerstore -n "__fish_peerstore_using_subcommand node" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand init" -l data -d 'Data directory of the node that will start the network' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand init" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand invite" -l data -d 'Data directory of a member node' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand invite" -l addr -d 'Member address to put in the ticket (default: the address the node in --data advertises)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand invite" -l qr -d 'Also print the ticket as a QR code (for the terminal: light modules drawn with block characters, for dark backgrounds)'
complete -c peerstore -n "__fish_peerstore_using_subcommand invite" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and not __fish_seen_subcommand_from put get help" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and not __fish_seen_subcommand_from put get help" -f -a "put" -d 'Store FILE (at most 1 MiB) as a block owned by the identity; prints its key'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and not __fish_seen_subcommand_from put get help" -f -a "get" -d 'Fetch the block KEY to stdout or to a file'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and not __fish_seen_subcommand_from put get help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from put" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -s o -l output -d 'Write to this file instead of stdout' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from help" -f -a "put" -d 'Store FILE (at most 1 MiB) as a block owned by the identity; prints its key'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from help" -f -a "get" -d 'Fetch the block KEY to stdout or to a file'
complete -c peerstore -n "__fish_peerstore_using_subcommand block; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand lookup" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand lookup" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand lookup" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand lookup" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand lookup" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand put" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -l version -d 'Copy this kept version instead of the current content (its number from `peerstore versions`)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand get" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -l json -d 'Print a JSON list of objects (`version`, `time`, `size`, `machine`, `current`) instead of lines'
complete -c peerstore -n "__fish_peerstore_using_subcommand versions" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and not __fish_seen_subcommand_from ls restore empty help" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and not __fish_seen_subcommand_from ls restore empty help" -f -a "ls" -d 'List the files in the trash, oldest deletion first'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and not __fish_seen_subcommand_from ls restore empty help" -f -a "restore" -d 'Put the file last deleted from PATH back (with its versions), creating missing directories'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and not __fish_seen_subcommand_from ls restore empty help" -f -a "empty" -d 'Delete every file in the trash for good, and free its space'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and not __fish_seen_subcommand_from ls restore empty help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -l json -d 'Print a JSON list of objects (`path`, `deleted`, `size`, `machine`) instead of lines'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -l to -d 'Restore it at this path instead (e.g. when PATH is taken)' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from empty" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List the files in the trash, oldest deletion first'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Put the file last deleted from PATH back (with its versions), creating missing directories'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "empty" -d 'Delete every file in the trash for good, and free its space'
complete -c peerstore -n "__fish_peerstore_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand ls" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -s r -l recursive -d 'Remove directories and their contents'
complete -c peerstore -n "__fish_peerstore_using_subcommand rm" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand backup" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand restore" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -l json -d 'Print one JSON object instead of a table'
complete -c peerstore -n "__fish_peerstore_using_subcommand ring" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -l json -d 'Print one JSON object instead of lines'
complete -c peerstore -n "__fish_peerstore_using_subcommand status" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand pin" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand pin" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand pin" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand pin" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand pin" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand unpin" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand unpin" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand unpin" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand unpin" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand unpin" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and not __fish_seen_subcommand_from create help" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and not __fish_seen_subcommand_from create help" -f -a "create" -d 'Create an account on the ring (first come, first served) and log this machine in as it. The password is read twice from the terminal'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and not __fish_seen_subcommand_from create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l identity -d 'Make this existing identity file the account\'s key, so its tree becomes the account\'s (default: a new key, an empty tree)' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -l password-file -d 'Read the password from this file instead of the terminal' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an account on the ring (first come, first served) and log this machine in as it. The password is read twice from the terminal'
complete -c peerstore -n "__fish_peerstore_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l with -d 'The account to share it with' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -l write -d 'Let it write too (storage nodes accept its versions of the folder\'s records by your grant)'
complete -c peerstore -n "__fish_peerstore_using_subcommand share" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l from -d 'The account to revoke' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -l eager -d 'Re-encrypt the files\' content now, not at each file\'s next write'
complete -c peerstore -n "__fish_peerstore_using_subcommand unshare" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -l json -d 'Print one JSON object (`given`: `path`, `to`, `time_ms`; `received`: `from`, `name`, `path`, `write`) instead of lines'
complete -c peerstore -n "__fish_peerstore_using_subcommand shares" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -l password-file -d 'Read the password from this file instead of the terminal' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand login" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand logout" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand whoami" -l identity -d 'Identity key file; it must exist [default: the account logged in with `peerstore login`, else this machine\'s own identity, created on first use]' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand whoami" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l peer -d 'Address of any ring node [default: the ticket\'s, else the local node\'s, else 127.0.0.1:7400]' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l ticket -d 'Join ticket of the network (from `peerstore invite`), or @FILE for the ticket in FILE [default: the network secret in --data]. Every user of the machine sees a command line: prefer a file' -r
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l ticket-file -d 'Read the join ticket from FILE (mode 0600: refused if group or others may read it); an empty file counts as no ticket' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l data -d 'Data directory of a node on this machine, whose network secret and address are used when no ticket is given' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l password-file -d 'Read the current password from this file' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -l new-password-file -d 'Read the new password from this file' -r -F
complete -c peerstore -n "__fish_peerstore_using_subcommand passwd" -s h -l help -d 'Print help'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "node" -d 'Run a ring node (until SIGINT/SIGTERM, then leave gracefully)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "init" -d 'Create a new network (its secret) in a data directory'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "invite" -d 'Print a join ticket for the network of a data directory'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "block" -d 'Store and fetch raw blocks'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "lookup" -d 'Find the node that owns a key'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "put" -d 'Copy a local file into the store at PATH (as seen in the mount)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "get" -d 'Copy the file at PATH out of the store'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "versions" -d 'List the versions of the file at PATH: the ones overwrites kept, oldest first, then the current one'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "trash" -d 'Deleted files: list, restore, empty'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "ls" -d 'List a directory of the store (default: the root)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "rm" -d 'Remove a file, link or empty directory (-r: a whole tree)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "backup" -d 'Copy a local directory tree into the store (default: the root)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "restore" -d 'Copy a store directory tree out to a local directory'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "ring" -d 'Walk the ring and print every member'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "status" -d 'Show a node\'s ring contact and its folder\'s open conflict copies, offline journal and pinned paths'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "pin" -d 'Keep a subtree of the node\'s mounted folder in this machine\'s caches, so it reads while the ring is out of reach'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "unpin" -d 'Stop keeping a pinned subtree (its data may leave the caches)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "user" -d 'Accounts on the ring'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "share" -d 'Share a folder of your tree with another account: it sees it as /shared/YOU/NAME in its paths and its mount'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "unshare" -d 'Revoke an account\'s access to a folder you share: the folder moves to new names and keys (each file\'s content gets a new key at its next write, or at once with --eager), so nothing written afterwards is readable with what it held; the other grantees get the new keys'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "shares" -d 'List what you share with whom, and what is shared with you'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "login" -d 'Log this machine in as an account: the node\'s mount and the client commands then act as it (the password is read from the terminal)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "logout" -d 'Log this machine out (remove its session; a running node keeps its keys until it stops)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "whoami" -d 'Show whose tree the commands act on: an identity file, the account logged in, or this machine\'s own identity'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "passwd" -d 'Change the password of the account logged in on this machine: its keyring is sealed again; the old password stops working, the tree is unchanged'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and not __fish_seen_subcommand_from node init invite block lookup put get versions trash ls rm backup restore ring status pin unpin user share unshare shares login logout whoami passwd help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from block" -f -a "put" -d 'Store FILE (at most 1 MiB) as a block owned by the identity; prints its key'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from block" -f -a "get" -d 'Fetch the block KEY to stdout or to a file'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from trash" -f -a "ls" -d 'List the files in the trash, oldest deletion first'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from trash" -f -a "restore" -d 'Put the file last deleted from PATH back (with its versions), creating missing directories'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from trash" -f -a "empty" -d 'Delete every file in the trash for good, and free its space'
complete -c peerstore -n "__fish_peerstore_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "create" -d 'Create an account on the ring (first come, first served) and log this machine in as it. The password is read twice from the terminal'
