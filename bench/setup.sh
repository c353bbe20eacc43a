#!/usr/bin/env bash
# Prepares the external baselines of `ferry-bench`: OpenSSL, scp, rsync and tar over ssh to a
# private sshd, and curl from a private nginx, all on loopback only.
#
#   bench/setup.sh [DIR]        (default /tmp/ferry-bench-ext)
#
# Installs openssh-server, openssh-client, rsync, nginx, openssl and curl with apt-get if missing,
# then writes into DIR (never into /etc): an sshd host key, a client key and its
# authorized_keys, an sshd_config for 127.0.0.1:42022, a self-signed certificate and an
# nginx.conf for https://127.0.0.1:42443 (TLS 1.3 only), and `ports.env`.
# It starts nothing: `ferry-bench --external DIR` starts `sshd -D` and nginx (daemon off)
# from these files as the current user for the length of the run and kills them when it
# ends. The system sshd and nginx, their configs and ports 22/80/443 are never touched.
set -euo pipefail
dir=${1:-/tmp/ferry-bench-ext}
ssh_port=42022
https_port=42443

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v scp >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v tar >/dev/null || need+=(tar)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

mkdir -p "$dir/www" "$dir/tmp"
chmod 700 "$dir"
[ -f "$dir/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"
[ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys"
# sshd insists on its privilege-separation directory existing.
[ -d /run/sshd ] || { mkdir -p /run/sshd 2>/dev/null || sudo mkdir -p /run/sshd; }

cat > "$dir/sshd_config" <<CONF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $(id -un)
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
CONF

[ -f "$dir/cert.pem" ] || openssl req -x509 -newkey ed25519 -nodes -days 30 -subj /CN=localhost \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

user_line=
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat > "$dir/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$https_port ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_session_tickets off;
        root $dir/www;
    }
}
CONF

cat > "$dir/ports.env" <<CONF
SSH_PORT=$ssh_port
HTTPS_PORT=$https_port
USER=$(id -un)
CONF
echo "prepared $dir (sshd 127.0.0.1:$ssh_port, nginx https://127.0.0.1:$https_port)"
