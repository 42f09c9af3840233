//! What each link input is (bitcode, ELF, archive, thin archive) and what archives hold.
//!
//! Only file headers are read: deciding that a link has no bitcode must cost next to nothing,
//! because thindist stands in for the linker on every link of a build.

use anyhow::{bail, Context, Result};
use object::read::archive::ArchiveFile;
use object::read::ReadCache;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Bitcode,
    Elf,
    Archive,
    ThinArchive,
    /// Linker scripts, shared-library stubs and anything else the linker reads itself.
    Other,
}

const BITCODE_MAGIC: &[u8] = b"BC\xC0\xDE";
const BITCODE_WRAPPER_MAGIC: &[u8] = b"\xDE\xC0\x17\x0B";

pub fn kind_of_bytes(head: &[u8]) -> FileKind {
    if head.starts_with(BITCODE_MAGIC) || head.starts_with(BITCODE_WRAPPER_MAGIC) {
        FileKind::Bitcode
    } else if head.starts_with(b"\x7fELF") {
        FileKind::Elf
    } else if head.starts_with(b"!<arch>\n") {
        FileKind::Archive
    } else if head.starts_with(b"!<thin>\n") {
        FileKind::ThinArchive
    } else {
        FileKind::Other
    }
}

/// Reads just enough of a file to tell its kind. A missing file is `Other`: the linker will
/// report it in its own words.
pub fn kind_of_file(path: &Path) -> FileKind {
    let mut head = [0u8; 8];
    let Ok(mut file) = File::open(path) else {
        return FileKind::Other;
    };
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    kind_of_bytes(&head[..filled])
}

/// One member of an archive, in archive order.
#[derive(Clone, Debug)]
pub struct Member {
    /// The member's name as the archive records it.
    pub name: String,
    pub kind: FileKind,
    /// Where the member's bytes are: the file itself for a thin archive, else the byte range
    /// inside the archive.
    pub location: MemberLocation,
}

#[derive(Clone, Debug)]
pub enum MemberLocation {
    /// A thin archive member: a file of its own, path relative to the current directory.
    File(PathBuf),
    /// A regular archive member: `offset..offset+size` inside the archive file.
    Range { offset: u64, size: u64 },
}

/// Lists the members of a regular or thin archive with the kind of each.
pub fn archive_members(archive: &Path) -> Result<Vec<Member>> {
    let file = File::open(archive)
        .with_context(|| format!("cannot open archive {}", archive.display()))?;
    let cache = ReadCache::new(file);
    let parsed = ArchiveFile::parse(&cache)
        .with_context(|| format!("{} is not a valid archive", archive.display()))?;
    let dir = archive.parent().unwrap_or(Path::new(""));
    let mut members = Vec::new();
    for member in parsed.members() {
        let member = member
            .with_context(|| format!("corrupt member header in archive {}", archive.display()))?;
        let name = String::from_utf8_lossy(member.name()).into_owned();
        if member.is_thin() {
            let path = if Path::new(&name).is_absolute() {
                PathBuf::from(&name)
            } else {
                dir.join(&name)
            };
            let kind = kind_of_file(&path);
            if !path.is_file() {
                bail!(
                    "thin archive {} names member {} which does not exist",
                    archive.display(),
                    path.display()
                );
            }
            members.push(Member {
                name,
                kind,
                location: MemberLocation::File(path),
            });
        } else {
            let (offset, size) = member.file_range();
            let head =
                object::ReadRef::read_bytes_at(&cache, offset, size.min(8)).map_err(|()| {
                    anyhow::anyhow!(
                        "archive {} is truncated in member {name}",
                        archive.display()
                    )
                })?;
            members.push(Member {
                name,
                kind: kind_of_bytes(head),
                location: MemberLocation::Range { offset, size },
            });
        }
    }
    Ok(members)
}

/// Does this archive hold any bitcode member?
pub fn archive_has_bitcode(members: &[Member]) -> bool {
    members.iter().any(|m| m.kind == FileKind::Bitcode)
}

/// Copies a regular archive member out to `dest`, atomically, unless an identical file is
/// already there (parallel links of one archive extract the same bytes).
pub fn extract_member(archive: &Path, offset: u64, size: u64, dest: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(archive)
        .with_context(|| format!("cannot open archive {}", archive.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; size as usize];
    file.read_exact(&mut bytes)
        .with_context(|| format!("archive {} is truncated", archive.display()))?;
    if std::fs::read(dest).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    crate::fsutil::write_atomic(dest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_magic() {
        assert_eq!(kind_of_bytes(b"BC\xC0\xDE\x35\x14"), FileKind::Bitcode);
        assert_eq!(kind_of_bytes(b"\xDE\xC0\x17\x0B"), FileKind::Bitcode);
        assert_eq!(kind_of_bytes(b"\x7fELF\x02"), FileKind::Elf);
        assert_eq!(kind_of_bytes(b"!<arch>\nxx"), FileKind::Archive);
        assert_eq!(kind_of_bytes(b"!<thin>\n"), FileKind::ThinArchive);
        assert_eq!(kind_of_bytes(b"INPUT("), FileKind::Other);
        assert_eq!(kind_of_bytes(b""), FileKind::Other);
    }

    #[test]
    fn corrupt_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.a");
        std::fs::write(
            &path,
            b"!<arch>\nfoo.o/          0           0     0     644     99999     `\nxx",
        )
        .unwrap();
        let err = archive_members(&path).unwrap_err();
        assert!(format!("{err:#}").contains("bad.a"), "{err:#}");
    }
}
