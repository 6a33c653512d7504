//! Directory documents and path selection.
//!
//! * [`policy`]: exit policies.
//! * [`descriptor`]: a relay's self-signed descriptor.
//! * [`flags`]: relay flags and how an authority assigns them.
//! * [`vote`]: one authority's signed view of the network.
//! * [`compute`]: the deterministic consensus computation over votes.
//! * [`weights`]: bandwidth weights per path position.
//! * [`consensus`]: the multi-signed consensus and its verification.
//! * [`microdesc`]: per-relay microdescriptors the compact consensus lists by digest.
//! * [`compress`]: compressed transfer, with a decompressor bounded against bombs.
//! * [`diff`]: diffs from a recent consensus to the current one.
//! * [`consensus_store`]: what a directory server keeps to serve them.
//! * [`path`]: choosing circuit paths from a consensus.
//! * [`guards`]: the client's persistent guard set.
//! * [`sybil`]: how many relays per address and subnet an authority lets be usable.
//!
//! Everything here is pure computation except [`guards::GuardSet::save`], [`guards::write_state`] and
//! [`guards::GuardSet::load`]. Signed documents parse into `Unchecked*` wrappers whose
//! contents are reachable only through `verify`, which checks signatures, time validity and
//! every bound. The byte-exact format is in `docs/protocol.md` §6.

pub(crate) mod policy;
pub mod request;
pub(crate) mod wire;

pub use policy::{ExitPolicy, PolicyAction, PolicyError, PolicyRule};
pub(crate) mod authority_info;
pub mod compress;
pub(crate) mod compute;
pub mod consensus;
pub mod consensus_store;
pub mod descriptor;
pub mod diff;
pub mod diff_format;
pub mod flags;
pub mod guards;
pub mod microdesc;
pub mod path;
pub(crate) mod selection;
pub mod sybil;
pub mod vanguards;
pub mod verified_consensus;
pub(crate) mod vote;
pub(crate) mod weights;

pub use authority_info::AuthorityInfo;
pub use compute::{
    compute_consensus, compute_consensus_full, round_weight, ComputedConsensus, ConsensusParams,
};
pub use consensus::{
    split_entries, AuthoritySignature, ConsensusBody, ConsensusEntry, ConsensusError, ListedRelay,
    SignedConsensus,
};
pub use descriptor::{Descriptor, DescriptorError, SignedDescriptor, UncheckedDescriptor};
pub use flags::{assign_flags, FlagParams, FlagThresholds, Observation, RelayFlags};
pub use guards::{GuardFileError, GuardParams, GuardSet};
pub use microdesc::{Microdesc, MicrodescDigest, MicrodescError, MicrodescIndex};
pub use path::{select_path, PathError, PathTarget, Transport};
pub use verified_consensus::{Consensus, UncheckedConsensus, VerifiedConsensus};
pub use vote::{SignedVote, UncheckedVote, Vote, VoteBody, VoteEntry, VoteError};
pub use weights::{BandwidthWeights, Position};
