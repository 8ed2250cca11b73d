//! Files only this user may read, whatever the umask: folders 0700 and
//! files 0600, set explicitly when they are created and tightened when an
//! older run left them wider. And the leftovers of processes that died
//! mid-write (`kill -9`, a power cut), told apart from files a live
//! process is writing right now.
//!
//! The token store and the precompiled connector cache use these; so does
//! the `ionflow` CLI for its state folder (locks, watermarks, status).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A leftover older than this is removed even when its writer's process id
/// is alive: process ids are reused, and no write here takes minutes.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(10 * 60);

/// Creates `dir` and any missing parents with mode 0700, and narrows `dir`
/// itself to 0700 when this user owns it and it is wider. A folder owned by
/// someone else (a shared mount) is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        builder.mode(0o700);
        builder.create(dir)?;
        let meta = fs::metadata(dir)?;
        if meta.uid() == current_uid() && meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Opens (creating if needed) a file for reading and writing with mode
/// 0600; an existing file of this user's is narrowed to 0600.
pub fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true);
    restrict(&mut options);
    let file = options.open(path)?;
    narrow(&file)?;
    Ok(file)
}

/// Creates (or truncates) `path` with mode 0600 and writes `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    restrict(&mut options);
    let mut file = options.open(path)?;
    narrow(&file)?;
    file.write_all(bytes)
}

/// Creates a new file with mode 0600; fails if `path` exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create_new(true).write(true);
    restrict(&mut options);
    let file = options.open(path)?;
    narrow(&file)?;
    Ok(file)
}

fn restrict(options: &mut OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = options;
}

/// `mode` on open is filtered by the umask and ignored for an existing
/// file; this sets the bits exactly.
fn narrow(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = file.metadata()?;
        if meta.uid() == current_uid() && meta.mode() & 0o777 != 0o600 {
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// The real user id of this process.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Whether a process with this id runs on this machine (it may belong to
/// another user: then it is alive too).
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
pub fn process_alive(_pid: u32) -> bool {
    true
}

/// A temporary name beside `path` for a write that is renamed into place:
/// `NAME.tmpPID-NANOS`, the writer's process id first, so that
/// [`temp_file_writer`] can tell a leftover from a write in progress.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{nanos}", std::process::id()));
    path.with_file_name(name)
}

/// For a name made by [`temp_path`] (or by older versions, `NAME.tmpPID`):
/// `Some(writer's pid, if readable)`; `None` for any other name.
pub fn temp_file_writer(name: &str) -> Option<Option<u32>> {
    let (_, rest) = name.rsplit_once(".tmp")?;
    Some(rest.split('-').next().and_then(|pid| pid.parse().ok()))
}

/// Whether a leftover written by process `pid` (when its name says so) and
/// last modified at `modified` may be removed: its writer is gone, or it is
/// older than [`LEFTOVER_GRACE`]. A file of this very process never is.
pub fn abandoned(pid: Option<u32>, modified: Option<SystemTime>) -> bool {
    if pid == Some(std::process::id()) {
        return false;
    }
    let old = modified
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > LEFTOVER_GRACE);
    old || pid.is_some_and(|pid| !process_alive(pid))
}

/// Removes the files of `dir` for which `writer_pid` recognises a leftover
/// (returning the writer's process id if the name holds one) and which are
/// [`abandoned`]. Returns how many were removed; a file that cannot be
/// removed is skipped, as is a folder that cannot be read.
pub fn remove_leftovers(dir: &Path, writer_pid: impl Fn(&str) -> Option<Option<u32>>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(&writer_pid) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_file()
            && abandoned(pid, meta.modified().ok())
            && fs::remove_file(entry.path()).is_ok()
        {
            tracing::info!(path = %entry.path().display(), "removed a file left by a process that stopped mid-write");
            removed += 1;
        }
    }
    removed
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_private_and_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&nested)), (0o700, 0o700));
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o777)).unwrap();
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);

        let file = nested.join("f");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(
            (mode(&file), fs::read_to_string(&file).unwrap().as_str()),
            (0o600, "y")
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        drop(open(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        assert!(create_new(&file).is_err());
    }

    #[test]
    fn temp_names_carry_the_writer() {
        let tmp = temp_path(Path::new("/x/abc.json"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("abc.json.tmp"), "{name}");
        assert_eq!(temp_file_writer(name), Some(Some(std::process::id())));
        assert_eq!(temp_file_writer("abc.tmp42"), Some(Some(42)));
        assert_eq!(temp_file_writer("abc.tmpxyz"), Some(None));
        assert_eq!(temp_file_writer("abc.json"), None);
    }

    #[test]
    fn leftovers_of_dead_or_old_writers_go_and_live_ones_stay() {
        assert!(process_alive(std::process::id()));
        // Process ids are at most 2^22 on Linux; this one is never alive.
        assert!(!process_alive(0x7fff_fff0));
        let now = Some(SystemTime::now());
        assert!(!abandoned(Some(std::process::id()), now));
        assert!(abandoned(Some(0x7fff_fff0), now));
        assert!(!abandoned(None, now));
        let long_ago = SystemTime::now() - LEFTOVER_GRACE * 2;
        assert!(abandoned(None, Some(long_ago)));
        assert!(!abandoned(Some(std::process::id()), Some(long_ago)));

        let dir = tempfile::tempdir().unwrap();
        for name in ["dead.tmp2147483632", "mine.tmp0", "other.json"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        fs::rename(
            dir.path().join("mine.tmp0"),
            dir.path().join(format!("mine.tmp{}", std::process::id())),
        )
        .unwrap();
        assert_eq!(remove_leftovers(dir.path(), temp_file_writer), 1);
        assert!(!dir.path().join("dead.tmp2147483632").exists());
        assert!(dir.path().join("other.json").exists());
    }
}
