//! Pulse's user interface: the HTML shell, the router and every page.
//!
//! Pages render on the server (feature `ssr`). Only the interactive parts are *islands*
//! (`#[island]`: the counter feed and the topic room) that hydrate in the browser (feature
//! `hydrate`), so the WebAssembly bundle carries just them, not the router or the static
//! pages; navigating between pages loads them from the server. Browser-only work lives in
//! [`live::event_source`].

#![recursion_limit = "256"]

pub mod api;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod components;
pub mod data;
pub mod live;
pub mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    ParamSegment, StaticSegment,
};

/// The HTML document around [`App`]; only the server renders it.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options islands=true/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application: header, routes, footer.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    view! {
        <Stylesheet id="leptos" href="/pkg/pulse.css"/>
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg"/>
        <Meta name="description" content="Live data pushed from a Rust server to your browser."/>
        <Meta name="theme-color" content="#0f172a"/>
        <Title formatter=|page: String| format!("{page} · Pulse")/>
        <Router>
            <header class="site-header">
                <A href="/" attr:class="brand">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "Pulse"
                </A>
                <nav aria-label="Main">
                    <A href="/">"Counter"</A>
                    <A href="/topics">"Topics"</A>
                    <A href="/about">"About"</A>
                </nav>
            </header>
            <main class="site-main">
                <Routes fallback=pages::not_found::NotFound>
                    <Route path=StaticSegment("") view=pages::counter::CounterPage/>
                    <Route path=StaticSegment("about") view=pages::about::AboutPage/>
                    <Route path=StaticSegment("topics") view=pages::topics::TopicsPage/>
                    <Route path=(StaticSegment("topics"), ParamSegment("name")) view=pages::topic::TopicPage/>
                </Routes>
            </main>
            <footer class="site-footer">
                "Server-Sent Events from Rust (axum) to Rust (Leptos, WebAssembly)."
            </footer>
        </Router>
    }
}
