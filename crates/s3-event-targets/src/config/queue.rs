//! The keys every target takes besides its own: the `queue` block
//! ([`QueueConfig`]: `enable`, `queue_dir`, `queue_limit`), the `client`
//! block ([`ClientConfig`]: `connect_timeout`, `request_timeout`), and how
//! a target configuration is read as its own keys plus those blocks
//! ([`TargetConfig`]).
//!
//! A target configuration derives `Deserialize` with
//! `#[serde(remote = "Self", deny_unknown_fields)]` over its own keys, holds
//! the blocks in `#[serde(skip)] queue` and `client` fields, and gets its
//! `Deserialize` from `target_config!`: the blocks' keys go to the blocks
//! (and, for a type that has one, the keys of a block of its own, such as
//! the AWS targets' connection keys, to that block), every other key to
//! the target's own fields, so that an unknown key is still refused,
//! naming it.

use std::path::PathBuf;

use s3_event_core::config::field_names;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::client::ClientConfig;
use super::values::{default_true, flag, named, opt_path, opt_u64};
use crate::notifier::TargetOptions;
use crate::{Error, Result};

/// Default `queue_limit`: the most events queued for a target, as MinIO.
pub const DEFAULT_QUEUE_LIMIT: usize = 100_000;

/// The pipeline keys of every target: whether it is used, and its queue.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Whether the target is enabled: a bool or MinIO's `"on"`/`"off"`
    /// (also `"true"`/`"false"`); an empty string is off. Default `true`:
    /// a configured target is used unless switched off, so notifications
    /// never go silent because of a default.
    #[serde(default = "default_true", deserialize_with = "enable")]
    pub enable: bool,

    /// Directory of the durable queue; unset keeps the queue in memory.
    #[serde(default, deserialize_with = "opt_path")]
    pub queue_dir: Option<PathBuf>,

    /// Most events queued for the target: a number or a numeric string;
    /// `0` or empty means the default, [`DEFAULT_QUEUE_LIMIT`] (as MinIO).
    #[serde(default = "default_queue_limit", deserialize_with = "queue_limit")]
    pub queue_limit: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enable: true,
            queue_dir: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

fn default_queue_limit() -> usize {
    DEFAULT_QUEUE_LIMIT
}

/// `enable`: a [`flag`].
fn enable<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    named("enable", flag(d))
}

/// `queue_limit`: `0` or unset is [`DEFAULT_QUEUE_LIMIT`].
fn queue_limit<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    Ok(match named("queue_limit", opt_u64(d))? {
        None | Some(0) => DEFAULT_QUEUE_LIMIT,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    })
}

impl QueueConfig {
    /// The pipeline options these keys imply (`queue_dir`, `queue_limit`),
    /// other options at their defaults.
    pub fn target_options(&self) -> TargetOptions {
        TargetOptions {
            queue_limit: self.queue_limit,
            queue_dir: self.queue_dir.clone(),
            ..TargetOptions::default()
        }
    }

    /// Checks the block; `target` is `"<type> <id>"`. Messages name the key.
    #[allow(dead_code)] // Unused with no target feature on.
    pub(crate) fn validate(&self, target: &str) -> Result<()> {
        if self.queue_limit == 0 {
            return Err(Error::InvalidConfig {
                target: target.to_owned(),
                key: "queue_limit",
                message: "`queue_limit` must be > 0".into(),
            });
        }
        Ok(())
    }
}

/// A target's configuration: its own keys (read by the derived
/// `Deserialize` of `#[serde(remote = "Self")]`), the [`QueueConfig`] and
/// [`ClientConfig`] blocks, and optionally a block of its own. Implemented
/// by `target_config!`.
#[allow(dead_code)] // Unused with no target feature on.
pub(crate) trait TargetConfig: Sized {
    /// Reads the target's own keys only (the derived implementation).
    fn deserialize_own<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error>;
    /// The keys of the type's own block, read apart from its fields (the
    /// AWS targets' connection keys); none by default.
    fn own_block_keys() -> &'static [&'static str] {
        &[]
    }
    /// Reads the type's own block from its keys.
    fn read_own_block(&mut self, _keys: Map<String, Value>) -> serde_json::Result<()> {
        Ok(())
    }
    /// The `queue` block.
    fn queue(&self) -> &QueueConfig;
    /// The `queue` block, to fill in.
    fn queue_mut(&mut self) -> &mut QueueConfig;
    /// The `client` block, to fill in.
    fn client_mut(&mut self) -> &mut ClientConfig;
}

/// Takes the keys `names` out of `map`, as a map of their own.
fn take(map: &mut Map<String, Value>, names: &[&str]) -> Map<String, Value> {
    let mut block = Map::new();
    for key in names {
        if let Some(v) = map.remove(*key) {
            block.insert((*key).to_owned(), v);
        }
    }
    block
}

/// The `Deserialize` of a [`TargetConfig`]: the blocks' keys to the
/// blocks, the others to the target's own fields (which refuse unknown
/// keys).
#[allow(dead_code)] // Unused with no target feature on.
pub(crate) fn deserialize<'de, T: TargetConfig, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<T, D::Error> {
    let mut own = Map::<String, Value>::deserialize(d)?;
    let queue = take(&mut own, field_names::<QueueConfig>());
    let client = take(&mut own, field_names::<ClientConfig>());
    let block = take(&mut own, T::own_block_keys());
    let queue = QueueConfig::deserialize(Value::Object(queue)).map_err(D::Error::custom)?;
    let client = ClientConfig::deserialize(Value::Object(client)).map_err(D::Error::custom)?;
    let mut config = T::deserialize_own(Value::Object(own)).map_err(D::Error::custom)?;
    config.read_own_block(block).map_err(D::Error::custom)?;
    *config.queue_mut() = queue;
    *config.client_mut() = client;
    Ok(config)
}

/// Every key a `T` accepts, as spelled in JSON: the blocks', then its own.
#[allow(dead_code)] // Unused with no target feature on.
pub(crate) fn keys<T: TargetConfig>() -> Vec<&'static str> {
    struct Own<T>(T);
    impl<'de, T: TargetConfig> Deserialize<'de> for Own<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            T::deserialize_own(d).map(Own)
        }
    }
    let mut keys = field_names::<QueueConfig>().to_vec();
    keys.extend(field_names::<ClientConfig>());
    keys.extend(T::own_block_keys());
    keys.extend(field_names::<Own<T>>());
    keys
}

/// Implements [`TargetConfig`] and `Deserialize` for a configuration
/// struct that derives `Deserialize` with `#[serde(remote = "Self",
/// deny_unknown_fields)]` and holds `#[serde(skip)] pub queue:
/// QueueConfig` and `#[serde(skip)] pub client: ClientConfig`.
///
/// `target_config!(Config, field: Block)` also reads the keys of `Block`
/// (a `Deserialize` struct with `deny_unknown_fields`) into
/// `#[serde(skip)] pub field: Block`.
#[allow(unused_macros)] // Unused with no target feature on.
macro_rules! target_config {
    ($config:ty $(, $field:ident: $block:ty)?) => {
        impl $crate::config::queue::TargetConfig for $config {
            fn deserialize_own<'de, D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                // The inherent function derived by `remote = "Self"`.
                <$config>::deserialize(d)
            }
            $(
                fn own_block_keys() -> &'static [&'static str] {
                    ::s3_event_core::config::field_names::<$block>()
                }
                fn read_own_block(
                    &mut self,
                    keys: ::serde_json::Map<String, ::serde_json::Value>,
                ) -> ::serde_json::Result<()> {
                    self.$field = <$block as ::serde::Deserialize>::deserialize(
                        ::serde_json::Value::Object(keys),
                    )?;
                    Ok(())
                }
            )?
            fn queue(&self) -> &$crate::config::QueueConfig {
                &self.queue
            }
            fn queue_mut(&mut self) -> &mut $crate::config::QueueConfig {
                &mut self.queue
            }
            fn client_mut(&mut self) -> &mut $crate::config::ClientConfig {
                &mut self.client
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $config {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::config::queue::deserialize(d)
            }
        }
    };
}
#[allow(unused_imports)] // Unused with no target feature on.
pub(crate) use target_config;
