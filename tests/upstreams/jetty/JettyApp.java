// Jetty 9.4 embedded upstream for the end-to-end tests: reports what Jetty and the Servlet API
// did with a request. Routing is plain servlet mapping (longest path prefix, then exact, then
// the "/" default servlet), with Jetty's default URI and cookie compliance.
// Build: javac -cp "$(tests/upstreams/jetty/classpath.sh)" -d DIR tests/upstreams/jetty/JettyApp.java
// Run:   PORT=N java -cp "DIR:$(tests/upstreams/jetty/classpath.sh)" JettyApp

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import javax.servlet.http.Cookie;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;

import org.eclipse.jetty.server.ForwardedRequestCustomizer;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class JettyApp {
    private static final String[] IDENTITY_HEADERS = {
        "x-user-id", "x-user-issuer", "x-user-roles", "x-tenant-id"
    };

    /** Answers every method with the report (HttpServlet itself would 501 on PATCH). */
    static class AnyMethod extends HttpServlet {
        private final String handler;

        AnyMethod(String handler) {
            this.handler = handler;
        }

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            report(req, resp, handler, null, null);
        }
    }

    /** GET only: HttpServlet's own doHead runs doGet, every other method gets 405 or 501. */
    static class GetOnly extends HttpServlet {
        private final String handler;

        GetOnly(String handler) {
            this.handler = handler;
        }

        @Override
        protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            report(req, resp, handler, null, null);
        }
    }

    /** Mapped to /tenants/*: /{t}/admin[/...] is tenant-admin, the rest tenant. */
    static class Tenants extends HttpServlet {
        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            String info = req.getPathInfo() == null ? "" : req.getPathInfo();
            String[] parts = info.replaceFirst("^/", "").split("/", 3);
            String tenant = parts[0].isEmpty() ? null : parts[0];
            boolean admin = parts.length >= 2 && parts[1].equals("admin");
            report(req, resp, admin ? "tenant-admin" : "tenant", tenant, null);
        }
    }

    /**
     * Mapped to /orders/*: /{id}/refund with an id of digits that Integer.parseInt accepts (no
     * sign; any Unicode decimal digit, as Character.digit reads them: Java's own trap) is
     * orders-refund, the rest orders.
     */
    static class Orders extends HttpServlet {
        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            String info = req.getPathInfo() == null ? "" : req.getPathInfo();
            String[] parts = info.replaceFirst("^/", "").split("/", -1);
            if (parts.length == 2 && parts[1].equals("refund") && !parts[0].isEmpty()
                    && Character.isDigit(parts[0].charAt(0))) {
                try {
                    int id = Integer.parseInt(parts[0]);
                    report(req, resp, "orders-refund", null, id);
                    return;
                } catch (NumberFormatException e) {
                    // not an id: the orders handler
                }
            }
            report(req, resp, "orders", null, null);
        }
    }

    static void report(HttpServletRequest req, HttpServletResponse resp, String handler, String tenant,
            Integer order) throws IOException {
        // What the servlet mapping matched on: Jetty has already decoded it and cut ;params.
        String path = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        // Server name and port as resolved by ForwardedRequestCustomizer; default port omitted.
        int port = req.getServerPort();
        boolean defaultPort = port == ("https".equalsIgnoreCase(req.getScheme()) ? 443 : 80);
        String host = req.getServerName() + (defaultPort ? "" : ":" + port);
        String cookie = null;
        if (req.getCookies() != null) {
            for (Cookie c : req.getCookies()) {
                if (c.getName().equals("session_jwt")) {
                    cookie = c.getValue();
                    break; // first one, as a typical lookup loop does
                }
            }
        }
        StringBuilder headers = new StringBuilder("{");
        for (int i = 0; i < IDENTITY_HEADERS.length; i++) {
            if (i > 0) headers.append(", ");
            headers.append(json(IDENTITY_HEADERS[i])).append(": ").append(json(req.getHeader(IDENTITY_HEADERS[i])));
        }
        headers.append('}');
        // The Servlet parameters (the query, plus a form body if there is one): getParameter
        // gives the first value of a repeated name. Jetty's map has no order: names are sorted.
        List<String> names = new ArrayList<>(req.getParameterMap().keySet());
        Collections.sort(names);
        StringBuilder queryKeys = new StringBuilder("[");
        for (int i = 0; i < names.size(); i++) {
            if (i > 0) queryKeys.append(", ");
            queryKeys.append(json(names.get(i)));
        }
        queryKeys.append(']');
        String body = "{\"framework\": \"jetty\""
            + ", \"handler\": " + json(handler)
            + ", \"method\": " + json(req.getMethod())
            + ", \"path\": " + json(path)
            + ", \"host\": " + json(host)
            + ", \"tenant\": " + json(tenant)
            + ", \"order\": " + (order == null ? "null" : order.toString())
            + ", \"vhost\": " + json(req.getHeader("X-Vhost"))
            + ", \"headers\": " + headers
            + ", \"cookie_session_jwt\": " + json(cookie)
            + ", \"query_method\": " + json(req.getParameter("_method"))
            + ", \"query_debug\": " + json(req.getParameter("debug"))
            + ", \"header_debug\": " + json(req.getHeader("X-Debug"))
            + ", \"query_keys\": " + queryKeys
            + "}\n";
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        resp.setStatus(200);
        resp.setContentType("application/json");
        resp.setContentLength(bytes.length);
        resp.getOutputStream().write(bytes);
    }

    /** A JSON string literal (or null), escaping quotes, backslashes and control characters. */
    static String json(String s) {
        if (s == null) return "null";
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c == 0x7f) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        String portEnv = System.getenv("PORT");
        if (portEnv == null || portEnv.isEmpty()) throw new IllegalStateException("PORT is required");

        // The documented way to run Jetty behind a proxy: honour Forwarded and X-Forwarded-*.
        HttpConfiguration http = new HttpConfiguration();
        http.addCustomizer(new ForwardedRequestCustomizer());
        Server server = new Server();
        ServerConnector connector = new ServerConnector(server, new HttpConnectionFactory(http));
        connector.setHost("127.0.0.1");
        connector.setPort(Integer.parseInt(portEnv));
        server.addConnector(connector);

        ServletContextHandler context = new ServletContextHandler();
        context.setContextPath("/");
        // "/x/*" also matches "/x" itself (servlet path "/x", no path info).
        context.addServlet(new ServletHolder(new AnyMethod("admin-critical")), "/admin/critical/*");
        context.addServlet(new ServletHolder(new AnyMethod("admin")), "/admin/*");
        context.addServlet(new ServletHolder(new Tenants()), "/tenants/*");
        context.addServlet(new ServletHolder(new Orders()), "/orders/*");
        context.addServlet(new ServletHolder(new AnyMethod("items")), "/items");
        context.addServlet(new ServletHolder(new GetOnly("reports")), "/reports");
        context.addServlet(new ServletHolder(new AnyMethod("me")), "/me");
        context.addServlet(new ServletHolder(new AnyMethod("public")), "/public/*");
        context.addServlet(new ServletHolder(new AnyMethod("fallback")), "/");
        server.setHandler(context);

        server.start();
        server.join();
    }
}
