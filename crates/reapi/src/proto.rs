//! The generated protobuf code, kept inside this crate: the rest of thindist uses the plain
//! types of [`crate::client`] and [`crate::worker`].
#![allow(clippy::all, missing_docs)]

pub mod build {
    pub mod bazel {
        pub mod semver {
            tonic::include_proto!("build.bazel.semver");
        }
        pub mod remote {
            pub mod execution {
                pub mod v2 {
                    tonic::include_proto!("build.bazel.remote.execution.v2");
                }
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    pub mod bytestream {
        tonic::include_proto!("google.bytestream");
    }
    pub mod devtools {
        pub mod remoteworkers {
            pub mod v1test2 {
                tonic::include_proto!("google.devtools.remoteworkers.v1test2");
            }
        }
    }
}
