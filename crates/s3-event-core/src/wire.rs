//! The `wire_struct!` macro: serde structs that keep every field they do not
//! know, and keep `null` values, so that parsing then serializing a payload
//! gives back the same JSON value.
//!
//! Written by hand rather than with `#[serde(flatten)]`: flatten buffers every
//! object into an intermediate tree before picking fields out, which makes the
//! typed parse slower than parsing into `serde_json::Value`; this visitor
//! matches borrowed keys directly and only allocates for unknown fields.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Visitor};

/// A map key borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value that may be JSON `null`; `None` means it was `null`.
pub(crate) struct Nullable<T>(pub(crate) Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Nullable<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or null")
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Nullable(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Nullable(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                T::deserialize(d).map(|v| Nullable(Some(v)))
            }
        }
        d.deserialize_option(V(PhantomData))
    }
}

/// Defines a struct whose fields are all optional, with a wire name each, plus
/// an `extra` map that keeps unknown fields (and known fields sent as `null`).
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty => $wire:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[doc = concat!("\n\nWire name: `", $wire, "`.")]
                pub $field: Option<$ty>,
            )*
            /// Fields this type does not know (and known fields sent as
            /// `null`), kept as received so that re-serializing is lossless.
            pub extra: serde_json::Map<String, serde_json::Value>,
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                $(
                    if let Some(v) = &self.$field {
                        m.serialize_entry($wire, v)?;
                    }
                )*
                for (k, v) in &self.extra {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($name), ")"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<$crate::wire::Key<'de>>()? {
                            match key.0.as_ref() {
                                $(
                                    $wire => {
                                        // A key seen before, typed or `null`, is a duplicate.
                                        if out.$field.is_some() || out.extra.contains_key($wire) {
                                            return Err(serde::de::Error::duplicate_field($wire));
                                        }
                                        match map.next_value::<$crate::wire::Nullable<$ty>>()?.0 {
                                            Some(v) => out.$field = Some(v),
                                            None => {
                                                out.extra.insert(
                                                    key.0.into_owned(),
                                                    serde_json::Value::Null,
                                                );
                                            }
                                        }
                                    }
                                )*
                                _ => {
                                    let v: serde_json::Value = map.next_value()?;
                                    out.extra.insert(key.0.into_owned(), v);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(crate) use wire_struct;
