//! Server functions, and what the pages call on the server while they render.

use leptos::prelude::*;

pub use crate::data::{
    check_message, check_topic_name, topic_iri, CounterSettings, TopicError, TopicMessage,
    TopicSnapshot, TopicSummary, MAX_MESSAGE_CHARS, TOPIC_PAGE_MESSAGES,
};

#[cfg(feature = "ssr")]
fn backend() -> Result<crate::backend::SharedBackend, TopicError> {
    use_context::<crate::backend::SharedBackend>()
        .ok_or_else(|| TopicError::Unavailable("the server did not provide its hub".into()))
}

/// Refuses a request another site's page made (a form on another site posting here, which
/// the browser sends without the page cookie): another site must not make a reader join or
/// leave the members, or change their token. Browsers say where a request comes from in
/// `Sec-Fetch-Site` (only `same-origin`, or `none` for one the user made, pass) or, without
/// it (plain HTTP to a host other than localhost, older browsers), in `Origin`, which must
/// name this host. A request with neither is not a browser's cross-site one.
#[cfg(feature = "ssr")]
fn refuse_other_sites(request: &http::request::Parts, what: &str) -> Result<(), Refused> {
    let headers = &request.headers;
    let same_site = match (
        headers.get("sec-fetch-site"),
        headers.get(http::header::ORIGIN),
    ) {
        (Some(site), _) => matches!(site.as_bytes(), b"same-origin" | b"none"),
        (None, Some(origin)) => {
            let host = request
                .uri
                .authority()
                .map(|authority| authority.as_str())
                .or_else(|| headers.get(http::header::HOST)?.to_str().ok());
            let origin_host = origin
                .to_str()
                .ok()
                .and_then(|origin| origin.split_once("://"))
                .map(|(_, host)| host);
            host.is_some() && origin_host == host
        }
        (None, None) => true,
    };
    if same_site {
        Ok(())
    } else {
        Err(Refused {
            error: TopicError::Invalid(format!("Requests from other sites cannot {what}.")),
            status: http::StatusCode::FORBIDDEN,
        })
    }
}

/// A server function's error and the status it answers with (server functions answer
/// `500` otherwise): the client's mistakes are `4xx`.
#[cfg(feature = "ssr")]
struct Refused {
    error: TopicError,
    status: http::StatusCode,
}

#[cfg(feature = "ssr")]
impl From<TopicError> for Refused {
    fn from(error: TopicError) -> Self {
        let status = status_of(&error);
        Self { error, status }
    }
}

/// The status a server function's error answers with: the client's mistake is a `4xx`.
#[cfg(feature = "ssr")]
fn status_of(error: &TopicError) -> http::StatusCode {
    match error {
        TopicError::Invalid(_) => http::StatusCode::BAD_REQUEST,
        TopicError::TooFast(_) => http::StatusCode::TOO_MANY_REQUESTS,
        TopicError::NotMember => http::StatusCode::FORBIDDEN,
        TopicError::Unavailable(_) | TopicError::Transport(_) => {
            http::StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The error of `result`, answered with its status. A plain form post (one that accepts
/// HTML) is sent back to its page instead, as for a success.
#[cfg(feature = "ssr")]
fn answered<T>(result: Result<T, Refused>) -> Result<T, TopicError> {
    result.map_err(|Refused { error, status }| {
        let form_post = use_context::<http::request::Parts>().is_some_and(|request| {
            request
                .headers
                .get(http::header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"))
        });
        if !form_post {
            if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
                response.set_status(status);
            }
        }
        error
    })
}

/// The head of the request being answered (a page or a server function's call). The hub
/// needs the URI as well as the headers: over HTTP/2 the host is the URI's authority, and
/// there is no `Host` header.
#[cfg(feature = "ssr")]
fn request_head() -> Result<http::request::Parts, TopicError> {
    use_context::<http::request::Parts>()
        .ok_or_else(|| TopicError::Unavailable("the server did not provide the request".into()))
}

#[cfg(feature = "ssr")]
fn set_cookie(value: &str) {
    if let (Some(response), Ok(value)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::HeaderValue::from_str(value),
    ) {
        response.append_header(http::header::SET_COOKIE, value);
    }
}

/// Sets the page cookie to a new hub token for `request` from the page of `topic` (a
/// name), with members-only access when `member`.
#[cfg(feature = "ssr")]
fn give_token(
    backend: &crate::backend::SharedBackend,
    request: &http::request::Parts,
    topic: &str,
    member: bool,
) -> Result<(), TopicError> {
    let cookie = backend
        .token_cookie(request, topic, member)
        .map_err(TopicError::Unavailable)?;
    set_cookie(&cookie);
    Ok(())
}

/// The recent messages and watchers of a topic for the page being rendered, which also
/// gets a fresh hub token (in its cookie) and discovery links.
#[cfg(feature = "ssr")]
pub fn topic_snapshot(name: String) -> Result<TopicSnapshot, TopicError> {
    check_topic_name(&name)?;
    let backend = backend()?;
    let request = request_head()?;
    let member = backend.is_member(&request);
    give_token(&backend, &request, &name, member)?;
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        // Discovery: where the hub is, and which topic this page is about.
        let topic = topic_iri(&name);
        for link in [
            "</.well-known/mercure>; rel=\"mercure\"".to_owned(),
            format!("<{topic}>; rel=\"self\""),
        ] {
            if let Ok(value) = http::HeaderValue::from_str(&link) {
                response.append_header(http::header::LINK, value);
            }
        }
    }
    let view = backend.snapshot(&topic_iri(&name), TOPIC_PAGE_MESSAGES, member);
    Ok(TopicSnapshot {
        topic: name,
        messages: view.messages,
        older: view.older,
        watchers: view.watchers,
        cursor: view.cursor,
        member,
    })
}

/// Pages render only on the server.
#[cfg(not(feature = "ssr"))]
pub fn topic_snapshot(name: String) -> Result<TopicSnapshot, TopicError> {
    let _ = name;
    Err(TopicError::Unavailable(
        "topic pages render on the server".into(),
    ))
}

/// Topics with recent activity, for the page being rendered.
#[cfg(feature = "ssr")]
pub fn active_topics() -> Result<Vec<TopicSummary>, TopicError> {
    Ok(backend()?.topics(50))
}

/// Pages render only on the server.
#[cfg(not(feature = "ssr"))]
pub fn active_topics() -> Result<Vec<TopicSummary>, TopicError> {
    Ok(Vec::new())
}

/// Sends a message to a topic from the composer.
#[server(endpoint = "post_message")]
pub async fn post_message(
    topic: String,
    text: String,
    members_only: Option<String>,
) -> Result<String, TopicError> {
    use std::net::SocketAddr;

    let client = leptos_axum::extract::<axum::extract::ConnectInfo<SocketAddr>>()
        .await
        .map(|info| info.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let outcome: Result<String, Refused> = async {
        check_topic_name(&topic)?;
        check_message(&text)?;
        let backend = backend()?;
        let request = request_head()?;
        // The page cookie makes its holder a member: a form another site's page posts
        // here would be sent with it.
        refuse_other_sites(&request, "post messages")?;
        let members_only = members_only.is_some();
        if members_only && !backend.is_member(&request) {
            return Err(TopicError::NotMember.into());
        }
        backend.check_rate(client).map_err(TopicError::TooFast)?;
        Ok(backend
            .publish(topic_iri(&topic), text, members_only)
            .await
            .map_err(TopicError::Unavailable)?)
    }
    .await;
    answered(outcome)
}

/// Joins (or leaves) the members, who see members-only messages: replaces the hub token,
/// for the page of `topic`.
#[server(endpoint = "membership")]
pub async fn set_membership(topic: String, member: bool) -> Result<bool, TopicError> {
    answered((|| -> Result<bool, Refused> {
        check_topic_name(&topic)?;
        let backend = backend()?;
        let request = request_head()?;
        refuse_other_sites(&request, "change membership")?;
        give_token(&backend, &request, &topic, member)?;
        Ok(member)
    })())
}

/// Gives an open page of `topic` a new hub token when the hub no longer accepts the one it
/// has (it ran out, or a restarted server signs with another key), keeping the membership
/// the page shows; a token the hub accepts is left as it is (a page being left may ask
/// after another one replaced it), and other sites are refused. Returns whether it gave a
/// new one.
#[server(endpoint = "token")]
pub async fn renew_token(topic: String, member: bool) -> Result<bool, TopicError> {
    answered((|| -> Result<bool, Refused> {
        check_topic_name(&topic)?;
        let backend = backend()?;
        let request = request_head()?;
        refuse_other_sites(&request, "change membership")?;
        if backend.membership(&request).is_some() {
            return Ok(false);
        }
        give_token(&backend, &request, &topic, member)?;
        Ok(true)
    })())
}

/// Who watches `topic` now: for a page that reconnected, whose list may hold watchers that
/// left while it was away without the hub saying so (a restarted server does not know them).
/// `None` when several instances share the hub (this one knows only its own watchers).
#[server(endpoint = "watchers")]
pub async fn topic_watchers(topic: String) -> Result<Option<Vec<String>>, TopicError> {
    answered((|| -> Result<Option<Vec<String>>, Refused> {
        check_topic_name(&topic)?;
        Ok(backend()?.watchers(&topic_iri(&topic)))
    })())
}

/// Makes the server answer the page being rendered with `404 Not Found`.
#[cfg(feature = "ssr")]
pub fn set_not_found_status() {
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
}

/// In the browser the status was already sent with the page: nothing to do.
#[cfg(not(feature = "ssr"))]
pub fn set_not_found_status() {}
