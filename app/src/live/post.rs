//! Sending a form to one of the server's functions from the browser, with `fetch`.
//!
//! The forms on the pages post to the server functions' URLs, so they work before (or
//! without) WebAssembly; in the browser they are sent with `fetch` instead, so the page
//! stays and shows the outcome. This is a few lines of `fetch`, not the generic
//! server-function client, which would add tens of kilobytes to the page's WASM.

use crate::api::TopicError;

/// Posts `form`'s fields form-encoded to its `action` URL, as the browser would without
/// WebAssembly; returns the answer's body (JSON) or the server function's error.
#[cfg(feature = "hydrate")]
pub async fn post_form(form: &web_sys::HtmlFormElement) -> Result<String, TopicError> {
    // The browser collects the fields (skipping disabled ones) and encodes them.
    let body = web_sys::FormData::new_with_form(form)
        .and_then(|fields| web_sys::UrlSearchParams::new_with_str_sequence_sequence(&fields))
        .map_err(|_| TopicError::Transport("cannot read the form".into()))?;
    post(&form.action(), &body).await
}

/// Asks the server for a new hub token (the page's cookie) with the same membership, for
/// the page's next connection to the hub, if the hub no longer accepts the one it has
/// (see [`crate::api::renew_token`]).
#[cfg(feature = "hydrate")]
pub async fn request_token(topic: &str, member: bool) -> Result<String, TopicError> {
    use leptos::server_fn::ServerFn;

    let body = web_sys::UrlSearchParams::new()
        .map_err(|_| TopicError::Transport("cannot build the form".into()))?;
    body.append("topic", topic);
    body.append("member", if member { "true" } else { "false" });
    post(crate::api::RenewToken::PATH, &body).await
}

/// Who watches `topic` now, if the server knows (see [`crate::api::topic_watchers`]).
#[cfg(feature = "hydrate")]
pub async fn fetch_watchers(topic: &str) -> Option<Vec<String>> {
    use leptos::server_fn::ServerFn;

    let body = web_sys::UrlSearchParams::new().ok()?;
    body.append("topic", topic);
    let text = post(crate::api::TopicWatchers::PATH, &body).await.ok()?;
    let json = super::page_data::Json::parse(&text)?;
    // `null` (the server does not know them all) has no items, and is not an empty list.
    if !json.is_array() {
        return None;
    }
    json.items()
        .iter()
        .map(super::page_data::Json::str)
        .collect()
}

/// Posts `body` form-encoded to `action`; returns the answer's body (JSON) or the server
/// function's error.
#[cfg(feature = "hydrate")]
async fn post(action: &str, body: &web_sys::UrlSearchParams) -> Result<String, TopicError> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;

    let transport = |what: &str| TopicError::Transport(what.to_owned());
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(body);
    let headers = web_sys::Headers::new().map_err(|_| transport("cannot build headers"))?;
    let _ = headers.set("Content-Type", "application/x-www-form-urlencoded");
    let _ = headers.set("Accept", "application/json");
    init.set_headers(&headers);
    let window = web_sys::window().ok_or_else(|| transport("no window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(action, &init))
        .await
        .map_err(|_| transport("the network request failed"))?
        .dyn_into()
        .map_err(|_| transport("no response"))?;
    let text = JsFuture::from(response.text().map_err(|_| transport("no body"))?)
        .await
        .ok()
        .and_then(|text| text.as_string())
        .unwrap_or_default();
    if response.ok() {
        Ok(text)
    } else {
        Err(error_from_json(&text)
            .unwrap_or_else(|| transport(&format!("the server answered {}", response.status()))))
    }
}

/// Reads a server function's error as serde encodes [`TopicError`]: `"NotMember"`, or an
/// object with one member named after the variant (`{"TooFast": 3}`).
#[cfg(feature = "hydrate")]
fn error_from_json(text: &str) -> Option<TopicError> {
    let json = super::page_data::Json::parse(text)?;
    if json.str().as_deref() == Some("NotMember") {
        return Some(TopicError::NotMember);
    }
    let text = |variant: &str| json.get(variant).str();
    text("Invalid")
        .map(TopicError::Invalid)
        .or_else(|| json.get("TooFast").u32().map(TopicError::TooFast))
        .or_else(|| text("Unavailable").map(TopicError::Unavailable))
        .or_else(|| text("Transport").map(TopicError::Transport))
}

/// Off the browser nothing is sent.
#[cfg(not(feature = "hydrate"))]
pub async fn post_form(form: &leptos::web_sys::HtmlFormElement) -> Result<String, TopicError> {
    let _ = form;
    Err(TopicError::Transport(
        "forms are sent from the browser".into(),
    ))
}

/// Off the browser nobody is asked.
#[cfg(not(feature = "hydrate"))]
pub async fn fetch_watchers(topic: &str) -> Option<Vec<String>> {
    let _ = topic;
    None
}

/// Off the browser there is no token to renew.
#[cfg(not(feature = "hydrate"))]
pub async fn request_token(topic: &str, member: bool) -> Result<String, TopicError> {
    let _ = (topic, member);
    Err(TopicError::Transport(
        "tokens are renewed from the browser".into(),
    ))
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ~` (as `application/x-www-form-urlencoded` allows).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_a_form() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode("safe-_.~09AZaz"), "safe-_.~09AZaz");
    }
}
