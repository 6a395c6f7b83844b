// A WASI 0.2 proxy in JavaScript (componentize-js, StarlingMonkey's fetch event):
// `hello from JavaScript: METHOD PATH`.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const text = `hello from JavaScript: ${event.request.method} ${url.pathname}${url.search}`;
  event.respondWith(new Response(text, { headers: { "content-type": "text/plain" } }));
});
