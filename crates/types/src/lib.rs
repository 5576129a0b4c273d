//! Gridwork's vocabulary types: amounts, hashes, addresses, keys, transactions, blocks.
//!
//! Everything here is plain data plus its canonical binary encoding (see
//! `docs/encoding.md`). No I/O, no clocks. The same value encodes to the same bytes on every
//! machine, which is what hashes and signatures are computed over.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod address;
mod amount;
mod block;
mod encoding;
mod hash;
mod keys;
mod market;
#[cfg(feature = "openapi")]
mod openapi;
mod service;
mod tx;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError, Rounded, DECIMALS, GRID};
pub use block::{tx_root, Block, Header};
pub use encoding::{Decode, DecodeError, Encode, Reader};
pub use hash::{Hash, HashError};
pub use keys::{verify_batch, KeyError, Keypair, PublicKey, Signature};
pub use market::{
    check_command, check_input_name, check_output_pattern, check_software_name, command_program,
    output_matches, requires_software, DataInput, Equivalence, Gpu, GpuVendor, Halting, Hardware,
    Instructions, Payment, Prescription, Program, Requirements, RunEnd, Segments, Software,
    SoftwareNeed, VendorImage, CONTAINER_SOFTWARE, MAX_IMAGE_PSNR_MDB, MAX_REQUIRED_OUTPUTS,
    MAX_SEGMENTS, MAX_SOFTWARE_NEEDS, MAX_SOFTWARE_TEXT, MIN_IMAGE_PSNR_MDB, NETWORK_SOFTWARE,
};
#[cfg(feature = "openapi")]
pub use openapi::{ADDRESS_PATTERN, AMOUNT_PATTERN, HASH_PATTERN, HEX32_PATTERN};
pub use service::{
    may_stream, request_hash, response_hash, FrameError, FrameReader, JudgeTask, JudgedAnswer,
    ResponseHasher, ResponseMethod, ServiceSpec, SignedJudgement, SignedReceipt, SignedResponse,
    StreamFrame, StreamJudgement, StreamPrice, StreamReceipt, StreamResponse, MAX_FRAME_BYTES,
    MAX_JUDGED, MAX_RECEIPTS_PER_TX,
};
pub use tx::{commitment, OwnerApproval, PeerAddr, SignedTx, Transaction, TxKind, MAX_TX_BYTES};
