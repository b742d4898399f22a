//! The data an island starts from, handed from the server to the browser without
//! serde_json in the WASM.
//!
//! Leptos deserializes island props with serde_json in the browser; that and the derived
//! deserializers were a quarter of the page's WASM (36 of 147 KB gzipped). Instead the
//! page renders an island's data as JSON into a hidden element ([`provide`]), and in the
//! browser the island reads it with the browser's own `JSON.parse` ([`Json`]) through its
//! type's [`IslandData::from_json`]. While rendering on the server, the island gets the
//! same value from context. Either way the island calls [`get`].

use leptos::prelude::*;
use serde::Serialize;

/// Makes `value` the data of the island that reads `id`: as context for the island's
/// server rendering, and as the returned hidden element for the browser.
pub fn provide<T: IslandData + Serialize>(id: &'static str, value: T) -> impl IntoView {
    // Off the server nothing renders this (the page around an island is not hydrated).
    let json = if cfg!(feature = "ssr") {
        serde_json::to_string(&value).unwrap_or_default()
    } else {
        String::new()
    };
    provide_context(value);
    view! { <div id=id data-json=json hidden></div> }
}

/// A type an island starts from.
pub trait IslandData: Clone + Send + Sync + 'static {
    /// Reads the value from the JSON [`provide`] rendered (serde's encoding of it).
    #[cfg(feature = "hydrate")]
    fn from_json(json: &Json) -> Option<Self>;
}

/// The island's data under `id`: from context on the server, from the page in the browser.
pub fn get<T: IslandData>(id: &str) -> Option<T> {
    #[cfg(feature = "hydrate")]
    {
        T::from_json(&read(id)?)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = id;
        use_context::<T>()
    }
}

/// The JSON the page holds under `id`, parsed.
#[cfg(feature = "hydrate")]
fn read(id: &str) -> Option<Json> {
    let text = web_sys::window()?
        .document()?
        .get_element_by_id(id)?
        .get_attribute("data-json")?;
    Json::parse(&text)
}

/// A JSON value parsed by the browser. Reading a field that is missing or of another type
/// gives `None`, never a panic.
#[cfg(feature = "hydrate")]
pub struct Json(wasm_bindgen::JsValue);

#[cfg(feature = "hydrate")]
impl Json {
    /// Parses `text`; `None` if it is not JSON.
    pub fn parse(text: &str) -> Option<Self> {
        js_sys::JSON::parse(text).ok().map(Self)
    }

    /// The member `key` of an object (undefined for anything else).
    pub fn get(&self, key: &str) -> Self {
        let key = wasm_bindgen::JsValue::from_str(key);
        Self(js_sys::Reflect::get(&self.0, &key).unwrap_or(wasm_bindgen::JsValue::UNDEFINED))
    }

    /// A string.
    pub fn str(&self) -> Option<String> {
        self.0.as_string()
    }

    /// A whole number from 0 to 2^53 - 1.
    pub fn u64(&self) -> Option<u64> {
        const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
        let n = self.0.as_f64()?;
        (n.fract() == 0.0 && (0.0..=MAX_SAFE).contains(&n)).then_some(n as u64)
    }

    /// A whole number from 0 to `u32::MAX`.
    pub fn u32(&self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    /// `true` or `false`.
    pub fn bool(&self) -> Option<bool> {
        self.0.as_bool()
    }

    /// Whether it is an array.
    pub fn is_array(&self) -> bool {
        js_sys::Array::is_array(&self.0)
    }

    /// The items of an array (none for anything else).
    pub fn items(&self) -> Vec<Self> {
        if self.is_array() {
            js_sys::Array::from(&self.0).iter().map(Self).collect()
        } else {
            Vec::new()
        }
    }
}
