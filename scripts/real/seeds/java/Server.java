// The payment-service seed's instrumentation in miniature: a plain JDK HTTP server
// (com.sun.net.httpserver) run with the OpenTelemetry Java agent, which instruments it and
// exports OTLP (its defaults: http/protobuf; endpoint and service name from the standard
// OTEL_* variables). The agent's `logging-otlp` exporter writes every span as OTLP JSON
// to standard output as well: the truth the tests compare against.
//
// GET /work?ms=N&status=S sleeps N milliseconds and answers S.
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;

public class Server {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv("PORT"));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 64);
        server.createContext("/work", exchange -> {
            Map<String, String> q = new HashMap<>();
            String raw = exchange.getRequestURI().getRawQuery();
            if (raw != null) {
                for (String kv : raw.split("&")) {
                    String[] p = kv.split("=", 2);
                    q.put(p[0], p.length > 1 ? p[1] : "");
                }
            }
            try {
                Thread.sleep(Long.parseLong(q.getOrDefault("ms", "0")));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            exchange.sendResponseHeaders(Integer.parseInt(q.getOrDefault("status", "200")), -1);
            exchange.close();
        });
        server.setExecutor(Executors.newFixedThreadPool(16));
        server.start();
    }
}
