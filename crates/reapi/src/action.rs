//! Turning a command with its input files into REAPI blobs: the Command, the input root's
//! Directory tree and the Action, serialized deterministically so that the same job gives the
//! same action digest on every machine.

use crate::digest::Digest;
use crate::proto::build::bazel::remote::execution::v2 as re;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One input file: where it goes in the input root, and where its bytes are here.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// Path inside the input root, `/`-separated, relative.
    pub path: String,
    pub digest: Digest,
    pub executable: bool,
    pub source: PathBuf,
}

/// A command to run remotely.
#[derive(Clone, Debug, Default)]
pub struct ActionSpec {
    pub arguments: Vec<String>,
    pub env: Vec<(String, String)>,
    pub inputs: Vec<InputFile>,
    pub output_files: Vec<String>,
    pub platform: Vec<(String, String)>,
    pub working_directory: String,
    pub timeout: Option<Duration>,
    pub do_not_cache: bool,
}

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
pub enum BlobData {
    Bytes(Vec<u8>),
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub data: BlobData,
}

/// An action ready to send: its digest and every blob it needs in the CAS.
pub struct BuiltAction {
    pub action_digest: Digest,
    pub blobs: Vec<Blob>,
}

#[derive(Default)]
struct DirTree {
    files: BTreeMap<String, (Digest, bool)>,
    dirs: BTreeMap<String, DirTree>,
}

impl DirTree {
    fn insert(&mut self, path: &str, digest: Digest, executable: bool) {
        match path.split_once('/') {
            Some((dir, rest)) => self
                .dirs
                .entry(dir.to_string())
                .or_default()
                .insert(rest, digest, executable),
            None => {
                self.files.insert(path.to_string(), (digest, executable));
            }
        }
    }

    /// Serializes this directory and its children bottom-up, pushing each Directory blob.
    fn build(&self, blobs: &mut Vec<Blob>) -> Digest {
        let directories = self
            .dirs
            .iter()
            .map(|(name, sub)| re::DirectoryNode {
                name: name.clone(),
                digest: Some(sub.build(blobs).to_proto()),
            })
            .collect();
        let files = self
            .files
            .iter()
            .map(|(name, (digest, executable))| re::FileNode {
                name: name.clone(),
                digest: Some(digest.to_proto()),
                is_executable: *executable,
            })
            .collect();
        let bytes = re::Directory {
            files,
            directories,
            symlinks: vec![],
        }
        .encode_to_vec();
        let digest = Digest::of_bytes(&bytes);
        blobs.push(Blob {
            digest: digest.clone(),
            data: BlobData::Bytes(bytes),
        });
        digest
    }
}

fn message_blob(message: &impl Message, blobs: &mut Vec<Blob>) -> Digest {
    let bytes = message.encode_to_vec();
    let digest = Digest::of_bytes(&bytes);
    blobs.push(Blob {
        digest: digest.clone(),
        data: BlobData::Bytes(bytes),
    });
    digest
}

fn platform(properties: &[(String, String)]) -> Option<re::Platform> {
    if properties.is_empty() {
        return None;
    }
    let mut props: Vec<re::platform::Property> = properties
        .iter()
        .map(|(n, v)| re::platform::Property {
            name: n.clone(),
            value: v.clone(),
        })
        .collect();
    // The API requires properties sorted by name, then value.
    props.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
    Some(re::Platform { properties: props })
}

impl ActionSpec {
    pub fn build(&self) -> BuiltAction {
        let mut blobs = Vec::new();
        let mut tree = DirTree::default();
        for input in &self.inputs {
            tree.insert(&input.path, input.digest.clone(), input.executable);
            blobs.push(Blob {
                digest: input.digest.clone(),
                data: BlobData::File(input.source.clone()),
            });
        }
        let input_root = tree.build(&mut blobs);
        let mut env = self.env.clone();
        env.sort();
        let mut outputs = self.output_files.clone();
        outputs.sort();
        let command = re::Command {
            arguments: self.arguments.clone(),
            environment_variables: env
                .into_iter()
                .map(|(name, value)| re::command::EnvironmentVariable { name, value })
                .collect(),
            // Both the current field and the one older servers read.
            output_files: outputs.clone(),
            output_paths: outputs,
            output_directories: vec![],
            platform: platform(&self.platform),
            working_directory: self.working_directory.clone(),
        };
        let command_digest = message_blob(&command, &mut blobs);
        let action = re::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            timeout: self.timeout.map(|t| prost_types::Duration {
                seconds: t.as_secs() as i64,
                nanos: t.subsec_nanos() as i32,
            }),
            do_not_cache: self.do_not_cache,
            salt: vec![],
            platform: platform(&self.platform),
        };
        let action_digest = message_blob(&action, &mut blobs);
        BuiltAction {
            action_digest,
            blobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(order: &[usize]) -> ActionSpec {
        let files = [
            ("a/x.o", b"x".as_slice()),
            ("a/b/y.o", b"y"),
            ("z.bc", b"z"),
        ];
        ActionSpec {
            arguments: vec!["clang".into(), "-c".into()],
            env: vec![("B".into(), "2".into()), ("A".into(), "1".into())],
            inputs: order
                .iter()
                .map(|&i| InputFile {
                    path: files[i].0.into(),
                    digest: Digest::of_bytes(files[i].1),
                    executable: false,
                    source: "/nowhere".into(),
                })
                .collect(),
            output_files: vec!["out.o".into()],
            ..Default::default()
        }
    }

    #[test]
    fn action_digest_does_not_depend_on_input_order() {
        assert_eq!(
            spec(&[0, 1, 2]).build().action_digest,
            spec(&[2, 0, 1]).build().action_digest
        );
    }

    #[test]
    fn nested_directories_become_directory_blobs() {
        let built = spec(&[0, 1, 2]).build();
        let dirs = built
            .blobs
            .iter()
            .filter(|b| matches!(b.data, BlobData::Bytes(_)))
            .count();
        // a/b, a, root, command, action
        assert_eq!(dirs, 5);
    }
}
