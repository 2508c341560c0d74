//! The target registry: what each target module tells the configuration
//! loader ([`TargetType`], implemented in the module's own folder), and the
//! one list of modules ([`targets!`], invoked once in `lib.rs`) that
//! declares the modules and builds the table [`crate::TARGET_TYPES`] the
//! loader reads its type names, features, keys and constructors from.
// With no target feature on, nothing instantiates the generic entry points.
#![allow(dead_code)]

use std::sync::Arc;

use s3_event_core::{Target, TargetId};
use serde_json::{Map, Value};

use crate::config::queue::{keys, TargetConfig};
use crate::notifier::TargetOptions;
use crate::{Error, Result};

/// A target type as the configuration loader sees it: its configuration
/// struct, MinIO's legacy spellings of its keys, and its constructor.
/// Implemented by each target module on its target; listed in `lib.rs` by
/// [`targets!`].
pub(crate) trait TargetType {
    /// The configuration: MinIO's keys, refusing unknown ones.
    type Config: TargetConfig + serde::de::DeserializeOwned;

    /// MinIO's legacy spellings, `(legacy, current)`, that are not simply
    /// the current key in camelCase (`queueDir` is read as `queue_dir`
    /// without being listed).
    const LEGACY_KEYS: &'static [(&'static str, &'static str)] = &[];

    /// Keys whose whole value is a secret, shown as `***` by
    /// [`NotifyConfig::redacted_json`](crate::NotifyConfig::redacted_json).
    const SECRET_KEYS: &'static [&'static str] = &[];

    /// Keys whose value is a URL or connection string that may hold a
    /// password (`scheme://user:password@…`, `user:password@…`, libpq's
    /// `password=…`), shown with the password as `***`; a key named
    /// `endpoint` is shown as scheme, host and port only.
    const URL_KEYS: &'static [&'static str] = &[];

    /// MinIO's legacy nested or list forms: `written` with `value`, when it
    /// is one, as `(as written, current key, value)` triples; `None` when
    /// it is not (the key is then read as usual). `target` is
    /// `"<type> <id>"`, for errors.
    fn legacy_form(_target: &str, _written: &str, _value: &Value) -> LegacyForm {
        None
    }

    /// The target, from its id and a configuration already read.
    fn build(id: TargetId, config: Self::Config) -> Result<Arc<dyn Target>>;
}

/// What [`TargetType::legacy_form`] gives: `(as written, current key,
/// value)` triples, or `None` when the key is not a legacy form.
pub(crate) type LegacyForm = Option<Result<Vec<(String, String, Value)>>>;

/// A built target with its pipeline options; `None` when it is disabled.
pub(crate) type Built = Option<(Arc<dyn Target>, TargetOptions)>;

/// One entry of [`crate::TARGET_TYPES`].
pub(crate) struct Descriptor {
    /// The type name in configuration and ARNs (`postgresql`).
    pub kind: &'static str,
    /// The cargo feature that compiles it in (`postgres`).
    pub feature: &'static str,
    /// `None` when the feature is off.
    pub imp: Option<Imp>,
}

/// A compiled-in target type's entry points, from its [`TargetType`].
#[derive(Clone, Copy)]
pub(crate) struct Imp {
    /// Every key its configuration accepts (current spelling).
    pub keys: fn() -> Vec<&'static str>,
    /// [`TargetType::LEGACY_KEYS`].
    pub legacy_keys: &'static [(&'static str, &'static str)],
    /// [`TargetType::SECRET_KEYS`].
    pub secret_keys: &'static [&'static str],
    /// [`TargetType::URL_KEYS`].
    pub url_keys: &'static [&'static str],
    /// [`TargetType::legacy_form`].
    pub legacy_form: fn(&str, &str, &Value) -> LegacyForm,
    /// Reads the keys (`senders` included) and builds the target.
    pub build: fn(&str, TargetId, &Map<String, Value>) -> Result<Built>,
}

impl Imp {
    /// The entry points of `T`.
    pub(crate) const fn of<T: TargetType>() -> Imp {
        Imp {
            keys: keys::<T::Config>,
            legacy_keys: T::LEGACY_KEYS,
            secret_keys: T::SECRET_KEYS,
            url_keys: T::URL_KEYS,
            legacy_form: T::legacy_form,
            build: build::<T>,
        }
    }
}

/// Reads the keys of a `T` target (`senders` already taken out) and builds
/// it; `None` when it is disabled. The [`Imp::build`] of every type.
pub(crate) fn build<T: TargetType>(
    kind: &str,
    id: s3_event_core::TargetId,
    map: &Map<String, Value>,
) -> Result<Built> {
    let config: T::Config = deserialize(kind, id.id(), &keys::<T::Config>(), map)?;
    let queue = config.queue();
    if !queue.enable {
        return Ok(None);
    }
    let options = queue.target_options();
    Ok(Some((T::build(id, config)?, options)))
}

/// Deserializes a target's keys; on failure finds the key at fault so the
/// error names it.
fn deserialize<T: serde::de::DeserializeOwned>(
    kind: &str,
    id: &str,
    keys: &[&'static str],
    map: &Map<String, Value>,
) -> Result<T> {
    let target = format!("{kind} {id}");
    serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
        for (k, v) in map {
            let one: Map<String, Value> = [(k.clone(), v.clone())].into_iter().collect();
            if let Err(e1) = serde_json::from_value::<T>(Value::Object(one)) {
                return match keys.iter().find(|key| **key == k.as_str()) {
                    Some(key) => Error::InvalidConfig {
                        target,
                        key,
                        message: format!("invalid `{key}`: {e1}"),
                    },
                    None => Error::UnknownKey {
                        target,
                        key: k.clone(),
                    },
                };
            }
        }
        Error::InvalidNotifyConfig {
            message: format!("{target}: {e}"),
        }
    })
}

/// Declares the target modules, one line each, and the table
/// [`crate::TARGET_TYPES`]:
///
/// ```text
/// targets! {
///     /// docs of the module entry
///     postgres: PostgresTarget, type "postgresql", feature "postgres";
/// }
/// ```
///
/// Each line compiles `mod <module>` (public, documented as needing its
/// feature) when the feature is on, and lists the type whether or not, so
/// that a configuration naming a type whose feature is off gets an error
/// naming the feature.
macro_rules! targets {
    ($($module:ident: $target:ident, type $kind:literal, feature $feature:literal;)+) => {
        $(
            #[cfg(feature = $feature)]
            #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
            pub mod $module;
        )+

        /// Every target type, by its name in configuration.
        pub(crate) const TARGET_TYPES: &[$crate::registry::Descriptor] = &[$(
            $crate::registry::Descriptor {
                kind: $kind,
                feature: $feature,
                imp: {
                    #[cfg(feature = $feature)]
                    let imp = Some($crate::registry::Imp::of::<$module::$target>());
                    #[cfg(not(feature = $feature))]
                    let imp = None;
                    imp
                },
            },
        )+];
    };
}
