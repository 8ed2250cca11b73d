//! Where a `.ionapi` file sits and who can read it: the checks the connector
//! cannot make, because it never sees the file system.

use std::path::Path;
use std::process::{Command, Stdio};

/// What a check found about the file's surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hygiene {
    /// Group or others may read or write the file.
    ModeTooWide { mode: u32 },
    /// The file is in a git work tree and `git check-ignore` says it is not ignored.
    NotIgnored { work_tree: String },
    /// git is not on PATH, so whether the file is ignored is unknown.
    GitUnavailable,
}

impl Hygiene {
    /// A message that names the file and the fix.
    pub fn message(&self, file: &Path) -> String {
        let file = file.display();
        match self {
            Hygiene::ModeTooWide { mode } => format!(
                "{file} has mode {mode:04o}, wider than 0600: other users on this machine can \
                 read the client secret and service account keys; run `chmod 600 {file}`"
            ),
            Hygiene::NotIgnored { work_tree } => format!(
                "{file} is inside the git work tree {work_tree} and not ignored, so a `git add .` \
                 would commit its secrets; add `*.ionapi` to that repository's .gitignore, or keep \
                 the file outside the repository"
            ),
            Hygiene::GitUnavailable => format!(
                "git is not on PATH, so whether {file} is ignored by a git repository was not checked"
            ),
        }
    }

    /// `GitUnavailable` is only a note: nothing is known to be wrong.
    pub fn is_warning(&self) -> bool {
        !matches!(self, Hygiene::GitUnavailable)
    }
}

/// Runs every check on `file`. A check that cannot run is skipped silently
/// unless not knowing matters (git missing).
pub fn check(file: &Path) -> Vec<Hygiene> {
    let mut found = Vec::new();
    if let Some(mode) = permission_bits(file)
        && mode & 0o077 != 0
    {
        found.push(Hygiene::ModeTooWide { mode });
    }
    match git_status(file) {
        GitStatus::NotIgnored { work_tree } => found.push(Hygiene::NotIgnored { work_tree }),
        GitStatus::Unavailable => found.push(Hygiene::GitUnavailable),
        GitStatus::Ignored | GitStatus::OutsideWorkTree => {}
    }
    found
}

#[cfg(unix)]
fn permission_bits(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(file)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn permission_bits(_file: &Path) -> Option<u32> {
    None
}

enum GitStatus {
    Ignored,
    NotIgnored { work_tree: String },
    OutsideWorkTree,
    Unavailable,
}

fn git_status(file: &Path) -> GitStatus {
    let Ok(absolute) = std::path::absolute(file) else {
        return GitStatus::OutsideWorkTree;
    };
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return GitStatus::OutsideWorkTree;
    };
    let git = |args: &[&std::ffi::OsStr]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
    };
    let top = match git(&["rev-parse".as_ref(), "--show-toplevel".as_ref()]) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return GitStatus::Unavailable,
        Err(_) => return GitStatus::OutsideWorkTree,
        Ok(out) if !out.status.success() => return GitStatus::OutsideWorkTree,
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    };
    // Exit 0: ignored; 1: not ignored; anything else: git could not tell.
    match git(&["check-ignore".as_ref(), "-q".as_ref(), "--".as_ref(), name])
        .map(|o| o.status.code())
    {
        Ok(Some(0)) => GitStatus::Ignored,
        Ok(Some(1)) => GitStatus::NotIgnored { work_tree: top },
        _ => GitStatus::OutsideWorkTree,
    }
}
