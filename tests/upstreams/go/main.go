// Go net/http upstream for the end-to-end tests: reports what a Go 1.19 standard-library app
// did with a request. Go 1.19's ServeMux has no methods or wildcards in patterns, so routing is
// what such an app does: prefix patterns ("/admin/") and exact ones ("/me"), longest wins, and
// the /tenants/ handler splits the path itself.
// Build: go build -o DIR/goapp tests/upstreams/go/main.go   Run: PORT=N DIR/goapp
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
)

// resolveHost imitates the common "ProxyHeaders" middleware (as in gorilla/handlers): trust
// X-Forwarded-Host as a whole, else the host= of the first Forwarded element, else r.Host.
func resolveHost(r *http.Request) string {
	if xfh := r.Header.Get("X-Forwarded-Host"); xfh != "" {
		return xfh
	}
	if fwd := r.Header.Get("Forwarded"); fwd != "" {
		first := strings.SplitN(fwd, ",", 2)[0]
		for _, pair := range strings.Split(first, ";") {
			name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if ok && strings.EqualFold(name, "host") {
				return strings.Trim(value, `"`)
			}
		}
	}
	return r.Host
}

// nullable turns the "absent" empty string into JSON null.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func report(w http.ResponseWriter, r *http.Request, handler, tenant string, order *int) {
	headers := map[string]*string{}
	for _, name := range []string{"x-user-id", "x-user-issuer", "x-user-roles", "x-tenant-id"} {
		// Header.Get canonicalizes the name, so x_user_id (canonical "X_user_id") stays apart.
		headers[name] = nullable(r.Header.Get(name))
	}
	var cookie *string
	if c, err := r.Cookie("session_jwt"); err == nil {
		cookie = &c.Value
	}
	// url.Values, as r.URL.Query() parses it (1.19: a pair with a ";" or a bad escape is
	// dropped); Get gives the first value of a repeated key.
	q := r.URL.Query()
	queryValue := func(key string) *string {
		if !q.Has(key) {
			return nil
		}
		v := q.Get(key)
		return &v
	}
	// A map has no order: the names are sorted.
	queryKeys := make([]string, 0, len(q))
	for key := range q {
		queryKeys = append(queryKeys, key)
	}
	sort.Strings(queryKeys)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"framework":          "go",
		"handler":            handler,
		"method":             r.Method,
		"path":               r.URL.Path,
		"host":               resolveHost(r),
		"tenant":             nullable(tenant),
		"order":              order,
		"vhost":              nullable(r.Header.Get("X-Vhost")),
		"headers":            headers,
		"cookie_session_jwt": cookie,
		"query_method":       queryValue("_method"),
		"query_debug":        queryValue("debug"),
		"header_debug":       nullable(r.Header.Get("X-Debug")),
		"query_keys":         queryKeys,
	})
}

func fixed(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { report(w, r, name, "", nil) }
}

// tenants serves "/tenants/": /tenants/{t}/admin[/...] is tenant-admin, the rest tenant.
func tenants(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/tenants/"), "/", 3)
	if len(parts) >= 2 && parts[1] == "admin" {
		report(w, r, "tenant-admin", parts[0], nil)
		return
	}
	report(w, r, "tenant", parts[0], nil)
}

// orders serves "/orders/": /orders/{id}/refund with an id of ASCII digits (checked before
// strconv.Atoi, which would also take a sign) is orders-refund, every other path orders.
func orders(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/orders/"), "/")
	if len(parts) == 2 && parts[1] == "refund" {
		if id, err := strconv.Atoi(parts[0]); err == nil && parts[0][0] >= '0' && parts[0][0] <= '9' {
			report(w, r, "orders-refund", "", &id)
			return
		}
	}
	report(w, r, "orders", "", nil)
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		log.Fatal("PORT is required")
	}
	mux := http.NewServeMux()
	// "/x/" matches the subtree; "/x" alone is registered too so it is not redirected to "/x/".
	mux.HandleFunc("/admin/critical/", fixed("admin-critical"))
	mux.HandleFunc("/admin/critical", fixed("admin-critical"))
	mux.HandleFunc("/admin/", fixed("admin"))
	mux.HandleFunc("/admin", fixed("admin"))
	mux.HandleFunc("/tenants/", tenants)
	mux.HandleFunc("/orders/", orders)
	mux.HandleFunc("/orders", fixed("orders"))
	mux.HandleFunc("/items", fixed("items"))
	mux.HandleFunc("/reports", func(w http.ResponseWriter, r *http.Request) {
		// GET only, as a 1.19 handler writes it; net/http does not map HEAD to GET by itself,
		// so HEAD is let in here the way such handlers usually do.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		report(w, r, "reports", "", nil)
	})
	mux.HandleFunc("/me", fixed("me"))
	mux.HandleFunc("/public/", fixed("public"))
	mux.HandleFunc("/public", fixed("public"))
	mux.HandleFunc("/", fixed("fallback"))
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, mux))
}
