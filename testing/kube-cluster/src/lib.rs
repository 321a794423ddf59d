//! The official Kubernetes control plane on loopback for ferry's end-to-end tests.
//!
//! `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler` are the upstream
//! programs, built from the published Go modules by `scripts/kube-cluster.sh build` (the
//! wrapper modules are in `go/`). Only the nodes are ours ([`node`]): each registers as a real
//! Node and runs the pods the real scheduler binds to it as local processes, reporting what it
//! fakes (images, the service network) the way a kubelet would. The default cluster has a CPU
//! node ([`CPU_NODE`]) and a tainted GPU node ([`GPU_NODE`]). [`fault_proxy`] sits in front
//! of the real API server when a test wants 500s, lost replies, slow requests or dropped
//! watches.
//!
//! The suite shares one cluster, started by `scripts/kube-cluster.sh start` (which
//! `scripts/test-all.sh` calls); a test finds it with [`running`] and works in a namespace of
//! its own ([`TestNamespace`]).

mod cluster;
pub mod fault_proxy;
pub mod kubeconfig;
pub mod node;
pub mod pki;
mod process;
mod shared;

pub use cluster::{
    CPU_NODE, Cluster, ClusterConfig, ClusterInfo, GPU_NODE, GPU_NODE_LABEL, GPU_NODE_TAINT,
    GPU_RESOURCE, NodeSpec,
};
pub use shared::{TestNamespace, running};

/// The Kubernetes release the control plane is built from (`go/kubernetes/go.mod`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The etcd release (`go/etcd/go.mod`).
pub const ETCD_VERSION: &str = "v3.7.3";
