// HiveMQ CE security extension of energy-pipeline: every CONNECT needs a user name and password
// found in the credentials file, and each user gets exactly one topic permission from it.
//
// The file (a mounted Secret in Kubernetes, written by `energy-pipeline platform-secrets`; by
// energy_harness.localstack.hivemq_security in tests) has one user per line, fields separated
// by white space, `#` starts a comment:
//
//   <user> publish   energy/<site>/#          pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
//   <user> subscribe $share/<group>/energy/#  pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
//
// A user connects only with the client id `<user>` or `<user>-...` (else CONNACK 0x85 Client
// identifier not valid): a client id names a session, and whoever connects with it takes that
// session over, so a device must not be able to claim the bridge's.
//
// A `publish` user (a device) may only publish to topics matching its filter and subscribe to
// nothing; a `subscribe` user (the bridge) may only subscribe, with exactly that filter (and, for
// `$share/<group>/...`, only as a shared subscription of that group), and publish nothing.
// Everything else is denied: HiveMQ answers a refused QoS 1 PUBLISH with PUBACK 0x87 and then
// disconnects the client, and a refused SUBSCRIBE with SUBACK 0x87; the message is not delivered.
//
// The hash is PBKDF2-HMAC-SHA256 (RFC 8018) with a 32-byte output over the password's bytes as
// sent in CONNECT, the same as Python's hashlib.pbkdf2_hmac("sha256", password, salt, n).
//
// The file is read again when its modification time or size changes (checked at each CONNECT, so
// a rotated Secret takes effect for the next connection without a restart). A malformed line is
// logged and skipped; a missing or unreadable file denies everyone. Its path: the environment
// variable MQTT_CREDENTIALS_FILE, else `credentials` in this extension's folder.
package dev.energypipeline.auth;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.auth.SimpleAuthenticator;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthInput;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthOutput;
import com.hivemq.extension.sdk.api.auth.parameter.TopicPermission;
import com.hivemq.extension.sdk.api.packets.auth.DefaultAuthorizationBehaviour;
import com.hivemq.extension.sdk.api.packets.auth.ModifiableDefaultPermissions;
import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import com.hivemq.extension.sdk.api.packets.connect.ConnectPacket;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

public final class AuthMain implements ExtensionMain {
    private static final Logger log = LoggerFactory.getLogger("energy-pipeline-auth");

    @Override
    public void extensionStart(final ExtensionStartInput input, final ExtensionStartOutput output) {
        final String configured = System.getenv("MQTT_CREDENTIALS_FILE");
        final Path path = configured != null && !configured.isEmpty()
                ? Path.of(configured)
                : input.getExtensionInformation().getExtensionHomeFolder().toPath().resolve("credentials");
        final Credentials credentials = new Credentials(path);
        credentials.current(); // logs what it found at start
        final SimpleAuthenticator authenticator = (authInput, authOutput) -> authenticate(credentials, authInput, authOutput);
        Services.securityRegistry().setAuthenticatorProvider(providerInput -> authenticator);
    }

    @Override
    public void extensionStop(final ExtensionStopInput input, final ExtensionStopOutput output) {
    }

    static void authenticate(final Credentials credentials, final SimpleAuthInput input, final SimpleAuthOutput output) {
        final ConnectPacket connect = input.getConnectPacket();
        final Optional<String> userName = connect.getUserName();
        final Optional<ByteBuffer> password = connect.getPassword();
        if (userName.isEmpty() || password.isEmpty()) {
            log.info("refused client '{}': no user name or password", connect.getClientId());
            output.failAuthentication(ConnackReasonCode.NOT_AUTHORIZED, "user name and password required");
            return;
        }
        final ByteBuffer buffer = password.get().asReadOnlyBuffer();
        final byte[] secret = new byte[buffer.remaining()];
        buffer.get(secret);
        final User user = credentials.current().get(userName.get());
        // An unknown user costs as much as a wrong password, so timing does not tell which users exist.
        final boolean valid = (user != null ? user.hash : Hash.DUMMY).matches(secret) && user != null;
        if (!valid) {
            log.info("refused client '{}': bad user name or password (user '{}')", connect.getClientId(), userName.get());
            output.failAuthentication(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password");
            return;
        }
        // A session belongs to its client id: whoever connects with an id takes the session
        // over (and the messages queued for it). So a user may only use its own ids: the user
        // name itself or `<user>-...`. Checked after the password, so the answer tells a
        // stranger nothing about which users exist.
        final String clientId = connect.getClientId();
        if (!clientId.equals(userName.get()) && !clientId.startsWith(userName.get() + "-")) {
            log.info("refused client '{}': user '{}' may only use the client id '{}' or '{}-...'",
                    clientId, userName.get(), userName.get(), userName.get());
            output.failAuthentication(ConnackReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    "client id must be the user name or start with <user name>-");
            return;
        }
        final ModifiableDefaultPermissions permissions = output.getDefaultPermissions();
        permissions.add(user.permission());
        permissions.setDefaultBehaviour(DefaultAuthorizationBehaviour.DENY);
        output.authenticateSuccessfully();
    }

    /** A PBKDF2-HMAC-SHA256 hash: `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`. */
    static final class Hash {
        static final Hash DUMMY = new Hash(600_000, new byte[16], new byte[32]);
        final int iterations;
        final byte[] salt;
        final byte[] expected;

        Hash(final int iterations, final byte[] salt, final byte[] expected) {
            this.iterations = iterations;
            this.salt = salt;
            this.expected = expected;
        }

        static Hash parse(final String text) {
            final String[] parts = text.split("\\$");
            if (parts.length != 4 || !parts[0].equals("pbkdf2-sha256")) {
                throw new IllegalArgumentException("hash is not pbkdf2-sha256$<iterations>$<salt>$<hash>");
            }
            final int iterations = Integer.parseInt(parts[1]);
            if (iterations < 1) {
                throw new IllegalArgumentException("iterations must be at least 1");
            }
            final byte[] expected = Base64.getDecoder().decode(parts[3]);
            if (expected.length != 32) {
                throw new IllegalArgumentException("hash must be 32 bytes");
            }
            return new Hash(iterations, Base64.getDecoder().decode(parts[2]), expected);
        }

        boolean matches(final byte[] password) {
            return MessageDigest.isEqual(pbkdf2(password), expected);
        }

        // PBKDF2 with one output block (32 bytes = one HMAC-SHA256), over the raw password bytes.
        private byte[] pbkdf2(final byte[] password) {
            try {
                final Mac mac = Mac.getInstance("HmacSHA256");
                // HMAC accepts an empty key; SecretKeySpec does not.
                mac.init(new SecretKeySpec(password.length == 0 ? new byte[1] : password, "HmacSHA256"));
                if (password.length == 0) {
                    return new byte[32]; // never equal to a real hash of 32 random-looking bytes
                }
                mac.update(salt);
                byte[] u = mac.doFinal(new byte[]{0, 0, 0, 1});
                final byte[] result = u.clone();
                for (int i = 1; i < iterations; i++) {
                    u = mac.doFinal(u);
                    for (int j = 0; j < result.length; j++) {
                        result[j] ^= u[j];
                    }
                }
                return result;
            } catch (final GeneralSecurityException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    static final class User {
        final String activity;
        final String filter;
        final Hash hash;

        User(final String activity, final String filter, final Hash hash) {
            this.activity = activity;
            this.filter = filter;
            this.hash = hash;
        }

        TopicPermission permission() {
            if (activity.equals("publish")) {
                return Builders.topicPermission()
                        .topicFilter(filter)
                        .type(TopicPermission.PermissionType.ALLOW)
                        .activity(TopicPermission.MqttActivity.PUBLISH)
                        .build();
            }
            if (filter.startsWith("$share/")) {
                final String[] parts = filter.split("/", 3);
                return Builders.topicPermission()
                        .topicFilter(parts[2])
                        .type(TopicPermission.PermissionType.ALLOW)
                        .activity(TopicPermission.MqttActivity.SUBSCRIBE)
                        .sharedSubscription(TopicPermission.SharedSubscription.SHARED)
                        .sharedGroup(parts[1])
                        .build();
            }
            return Builders.topicPermission()
                    .topicFilter(filter)
                    .type(TopicPermission.PermissionType.ALLOW)
                    .activity(TopicPermission.MqttActivity.SUBSCRIBE)
                    .sharedSubscription(TopicPermission.SharedSubscription.NOT_SHARED)
                    .build();
        }
    }

    /** The users of the credentials file, read again whenever the file changes. */
    static final class Credentials {
        private static final Object MISSING = new Object();
        private final Path path;
        private Object stamp = null;
        private Map<String, User> users = Map.of();

        Credentials(final Path path) {
            this.path = path;
        }

        synchronized Map<String, User> current() {
            final Object now;
            try {
                final BasicFileAttributes attributes = Files.readAttributes(path, BasicFileAttributes.class);
                now = List.of(attributes.lastModifiedTime(), attributes.size(), attributes.fileKey() == null ? "" : attributes.fileKey());
            } catch (final IOException e) {
                if (stamp != MISSING) {
                    log.error("credentials file {} cannot be read ({}): every client is refused", path, e.toString());
                    stamp = MISSING;
                    users = Map.of();
                }
                return users;
            }
            if (!now.equals(stamp)) {
                users = read();
                stamp = now;
                log.info("read {} users from the credentials file {}", users.size(), path);
            }
            return users;
        }

        private Map<String, User> read() {
            final List<String> lines;
            try {
                lines = Files.readAllLines(path, StandardCharsets.UTF_8);
            } catch (final IOException e) {
                log.error("credentials file {} cannot be read ({}): every client is refused", path, e.toString());
                return Map.of();
            }
            final Map<String, User> result = new HashMap<>();
            for (int i = 0; i < lines.size(); i++) {
                final String line = lines.get(i).strip();
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                final String[] fields = line.split("\\s+");
                try {
                    if (fields.length != 4) {
                        throw new IllegalArgumentException("expected 4 fields: user, publish|subscribe, topic filter, hash");
                    }
                    if (!fields[1].equals("publish") && !fields[1].equals("subscribe")) {
                        throw new IllegalArgumentException("the second field must be publish or subscribe");
                    }
                    if (fields[2].startsWith("$share/") && (fields[1].equals("publish") || fields[2].split("/", 3).length < 3)) {
                        throw new IllegalArgumentException("$share/<group>/<filter> is for subscribe users only");
                    }
                    if (result.containsKey(fields[0])) {
                        throw new IllegalArgumentException("user " + fields[0] + " is listed twice");
                    }
                    result.put(fields[0], new User(fields[1], fields[2], Hash.parse(fields[3])));
                } catch (final IllegalArgumentException e) {
                    // The line may hold a hash: name only its number and the reason.
                    log.error("credentials file {} line {} skipped: {}", path, i + 1, e.getMessage());
                }
            }
            return result;
        }
    }
}
