//! Compiles thindist's own REAPI protos with protox (no protoc needed).
fn main() {
    let files = [
        "proto/build/bazel/remote/execution/v2/remote_execution.proto",
        "proto/google/bytestream/bytestream.proto",
        "proto/google/devtools/remoteworkers/v1test2/bots.proto",
    ];
    let descriptors = protox::compile(files, ["proto"]).expect("the vendored protos must compile");
    tonic_prost_build::configure()
        // Servers too: the tests run the client and the worker against hostile fake servers.
        .build_server(true)
        .compile_fds(descriptors)
        .expect("code generation from the protos failed");
    println!("cargo:rerun-if-changed=proto");
}
