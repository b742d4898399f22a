//! The site: the Leptos app's pages and server functions, served from the built site
//! folder, and their view of the hub ([`backend`]).

pub mod backend;

use std::sync::Arc;

use app::{api::CounterSettings as PageCounterSettings, shell, App};
use axum::Router;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::{file_and_error_handler_with_context, generate_route_list, LeptosRoutes};

use crate::hub::service::HubService;

/// The pages, their server functions and the built site's static files; each page gets
/// `counter` (what `/stream` does) and the hub as Leptos context.
pub fn router(leptos: LeptosOptions, counter: PageCounterSettings, hub: Arc<HubService>) -> Router {
    let backend: app::backend::SharedBackend = Arc::new(backend::HubBackend(hub));
    let context = move || {
        provide_context(counter);
        provide_context(Arc::clone(&backend));
    };
    let options = leptos.clone();
    Router::new()
        .leptos_routes_with_context(
            &leptos,
            generate_route_list(App),
            context.clone(),
            move || shell(options.clone()),
        )
        .fallback(file_and_error_handler_with_context::<LeptosOptions, _>(
            context, shell,
        ))
        .with_state(leptos)
}
