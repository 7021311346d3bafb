#!/bin/sh
# Run by the Debian installer at the end (preseed/late_command), from its initrd:
# the build user's SSH key and password-less sudo, as the Hyper-V seeds do, and a
# locked password (the installer needed one; nobody knows it).
set -e
user="$1"
mkdir -p "/target/home/$user/.ssh"
cp /gmi-authorized_keys "/target/home/$user/.ssh/authorized_keys"
chmod 700 "/target/home/$user/.ssh"
chmod 600 "/target/home/$user/.ssh/authorized_keys"
in-target chown -R "$user:$user" "/home/$user/.ssh"
in-target passwd -l "$user"
echo "$user ALL=(ALL) NOPASSWD:ALL" > "/target/etc/sudoers.d/90-gmi-build"
chmod 0440 "/target/etc/sudoers.d/90-gmi-build"
