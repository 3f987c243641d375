package dev.etter.neo4j;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.configuration.ssl.ClientAuth;
import org.neo4j.configuration.ssl.SslPolicyConfig;
import org.neo4j.configuration.ssl.SslPolicyScope;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;

/**
 * Runs an embedded Neo4j Community DBMS with only the Bolt connector, for local
 * development and tests.
 *
 * <pre>
 * java -Xmx512m -cp target/neo4j-launcher.jar:target/lib/* dev.etter.neo4j.Launcher \
 *      --home DIR [--address 127.0.0.1] [--port 57687] [--pagecache 256m] [--tls-dir DIR]
 * </pre>
 *
 * <p>With {@code --tls-dir DIR} the Bolt connector also takes TLS, optionally: plaintext and
 * TLS clients share the port ({@code bolt://} and {@code bolt+s://}). DIR holds the server's
 * PKCS#8 PEM key {@code private.key} and certificate chain {@code public.crt} (the layout of a
 * Neo4j SSL policy directory); no client certificates are asked for.
 *
 * Authentication is disabled unless the environment variable
 * {@code ETTER_NEO4J_PASSWORD} is non-empty; then auth is enabled and the password
 * of user {@code neo4j} is set to it (at least 8 characters).
 *
 * <p>Once the DBMS answers {@code RETURN 1} through the embedded API and the Bolt
 * port accepts a Bolt 4.4 handshake, one line starting with {@code ETTER_NEO4J_READY}
 * is printed on stdout. SIGTERM / SIGINT shut the DBMS down cleanly.
 */
public final class Launcher {
  private static final Duration READY_DEADLINE = Duration.ofSeconds(120);

  private Launcher() {}

  public static void main(String[] args) throws Exception {
    long t0 = System.nanoTime();
    Path home = null;
    String address = "127.0.0.1";
    int port = 57687;
    String pagecache = "256m";
    Path tlsDir = null;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      String v = i + 1 < args.length ? args[i + 1] : null;
      switch (a) {
        case "--home" -> { home = Path.of(need(a, v)); i++; }
        case "--address" -> { address = need(a, v); i++; }
        case "--port" -> { port = Integer.parseInt(need(a, v)); i++; }
        case "--pagecache" -> { pagecache = need(a, v); i++; }
        case "--tls-dir" -> { tlsDir = Path.of(need(a, v)).toAbsolutePath(); i++; }
        case "-h", "--help" -> {
          System.out.println(
              "usage: Launcher --home DIR [--address A] [--port P] [--pagecache 256m] [--tls-dir DIR]");
          return;
        }
        default -> die("unknown argument: " + a);
      }
    }
    if (home == null) {
      die("--home DIR is required");
    }
    home = home.toAbsolutePath();
    Files.createDirectories(home);
    String password = System.getenv().getOrDefault("ETTER_NEO4J_PASSWORD", "");
    boolean auth = !password.isEmpty();

    DatabaseManagementServiceBuilder builder =
        new DatabaseManagementServiceBuilder(home)
            // Bolt only, on loopback; TLS off unless --tls-dir, all protocol versions left enabled
            .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress(address))
            .setConfig(GraphDatabaseSettings.default_advertised_address, new SocketAddress(address))
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress(address, port))
            .setConfig(BoltConnector.advertised_address, new SocketAddress(address, port))
            .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
            .setConfig(HttpConnector.enabled, false)
            .setConfig(HttpsConnector.enabled, false)
            .setConfig(GraphDatabaseSettings.auth_enabled, auth)
            // never phone home (this machine has no network beyond loopback anyway)
            .setConfig(GraphDatabaseSettings.udc_enabled, false)
            .setConfig(GraphDatabaseInternalSettings.udc_network_enabled, false)
            // keep memory and disk modest
            .setConfig(GraphDatabaseSettings.pagecache_memory, parseBytes(pagecache))
            .setConfig(GraphDatabaseSettings.keep_logical_logs, "1 files")
            .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 16L * 1024 * 1024)
            .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
            .setConfig(GraphDatabaseSettings.preallocate_store_files, false);
    if (tlsDir != null) {
      // dbms.ssl.policy.bolt.*: plaintext and TLS on the one port, no client certificates
      SslPolicyConfig bolt = SslPolicyConfig.forScope(SslPolicyScope.BOLT);
      Files.createDirectories(tlsDir.resolve("trusted"));
      Files.createDirectories(tlsDir.resolve("revoked"));
      builder
          .setConfig(bolt.enabled, true)
          .setConfig(bolt.base_directory, tlsDir)
          .setConfig(bolt.private_key, tlsDir.resolve("private.key"))
          .setConfig(bolt.public_certificate, tlsDir.resolve("public.crt"))
          .setConfig(bolt.client_auth, ClientAuth.NONE)
          .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.OPTIONAL);
    }
    DatabaseManagementService dbms = builder.build();

    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  System.out.println("ETTER_NEO4J_STOPPING");
                  System.out.flush();
                  try {
                    dbms.shutdown();
                  } finally {
                    System.out.println("ETTER_NEO4J_STOPPED");
                    System.out.flush();
                    stopped.countDown();
                  }
                },
                "etter-neo4j-shutdown"));

    if (auth) {
      setPassword(dbms, password);
    }

    // 1) a real Cypher round trip through the embedded API
    GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
    Object one =
        db.executeTransactionally("RETURN 1 AS one", Map.of(), r -> r.next().get("one"));
    if (!(one instanceof Number n) || n.longValue() != 1L) {
      die("embedded RETURN 1 gave " + one);
    }
    // 2) the Bolt port accepts a Bolt 4.4 handshake (what neo4rs 0.8 speaks)
    long deadline = System.nanoTime() + READY_DEADLINE.toNanos();
    IOException last = null;
    while (true) {
      try {
        int agreed = boltHandshake(address, port);
        if (agreed != 0x0404) {
          die(String.format("Bolt 4.4 handshake refused by the server (answer 0x%08x)", agreed));
        }
        break;
      } catch (IOException e) {
        last = e;
        if (System.nanoTime() > deadline) {
          die("Bolt port " + address + ":" + port + " not answering: " + last);
        }
        Thread.sleep(250);
      }
    }
    double secs = (System.nanoTime() - t0) / 1e9;
    System.out.printf(
        "ETTER_NEO4J_READY bolt://%s:%d auth=%s tls=%s home=%s (%.1fs)%n",
        address, port, auth, tlsDir == null ? "off" : "optional", home, secs);
    System.out.flush();
    stopped.await();
  }

  /** Sends the Bolt preamble proposing only 4.4; returns the version the server agreed. */
  static int boltHandshake(String host, int port) throws IOException {
    try (Socket s = new Socket()) {
      s.connect(new InetSocketAddress(host, port), 2000);
      s.setSoTimeout(5000);
      OutputStream out = s.getOutputStream();
      byte[] msg = {
        0x60, 0x60, (byte) 0xB0, 0x17, // magic
        0, 0, 4, 4, // 4.4
        0, 0, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 0
      };
      out.write(msg);
      out.flush();
      return new DataInputStream(s.getInputStream()).readInt();
    }
  }

  private static void setPassword(DatabaseManagementService dbms, String password) {
    GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
    try {
      system.executeTransactionally(
          "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
    } catch (RuntimeException e) {
      String m = String.valueOf(e.getMessage());
      // setting the password it already has is refused; that is fine
      if (!m.toLowerCase().contains("cannot be the same")) {
        throw e;
      }
    }
  }

  static long parseBytes(String s) {
    String t = s.trim().toLowerCase();
    long mult = 1;
    char c = t.charAt(t.length() - 1);
    if (c == 'k' || c == 'm' || c == 'g') {
      mult = c == 'k' ? 1024L : c == 'm' ? 1024L * 1024 : 1024L * 1024 * 1024;
      t = t.substring(0, t.length() - 1);
    }
    return Long.parseLong(t) * mult;
  }

  private static String need(String flag, String v) {
    if (v == null) {
      die(flag + " needs a value");
    }
    return v;
  }

  private static void die(String msg) {
    System.err.println("neo4j-launcher: " + msg);
    System.err.flush();
    System.exit(2);
  }
}
