# Sourced by users.sh and empty-volume.sh (POSIX sh): `admin_client DIR` writes DIR/admin.properties
# for Kafka's admin tools, logging in as the brokers' super user with this pod's node
# certificate (PEM key store DIR/keystore.pem, private) on the mutual-TLS INTERNAL listener.
admin_client() {
  tls_dir=${KAFKA_TLS_DIR:-/etc/kafka/tls}
  (
    umask 077
    cat "$tls_dir/tls.key" "$tls_dir/tls.crt" >"$1/keystore.pem"
    {
      echo "security.protocol=SSL"
      echo "ssl.keystore.type=PEM"
      echo "ssl.keystore.location=$1/keystore.pem"
      echo "ssl.truststore.type=PEM"
      echo "ssl.truststore.location=$tls_dir/ca.crt"
    } >"$1/admin.properties"
  )
}
