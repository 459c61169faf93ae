# Sourced by scripts/install, scripts/demo and scripts/test (bash). The clone belongs to whoever
# owns its top directory; when root runs a script in someone else's clone (`sudo scripts/demo`),
# everything written into the clone must end up theirs, or their own later `scripts/install`
# fails with Permission denied.
# shellcheck shell=bash

repo="$(pwd)"
owner_uid="$(stat -c %u "$repo")"
owner_gid="$(stat -c %g "$repo")"
owner_name="$(getent passwd "$owner_uid" | cut -d: -f1 || true)"
owner_home="$(getent passwd "$owner_uid" | cut -d: -f6 || true)"

# True when root is working in a clone that belongs to another user.
in_users_clone() {
  [ "$(id -u)" = 0 ] && [ "$owner_uid" != 0 ]
}

# Run a command as the clone's owner (as is when that is us already).
as_owner() {
  if in_users_clone; then
    setpriv --reuid="$owner_uid" --regid="$owner_gid" --clear-groups -- \
      env HOME="${owner_home:-/nonexistent}" USER="${owner_name:-$owner_uid}" \
      LOGNAME="${owner_name:-$owner_uid}" "$@"
  else
    "$@"
  fi
}

# Hand back to the owner whatever root created in the clone (bytecode caches, pytest and
# hypothesis caches, egg-info, a .venv from an older install). Only root-owned files are touched.
give_back_clone() {
  if in_users_clone; then
    find "$repo" -xdev -uid 0 -exec chown -h "$owner_uid:$owner_gid" {} + 2>/dev/null || true
  fi
}

# Not root, in our own clone, but root left files in it (an earlier `sudo scripts/...` of an older
# burrow): say so and name the fix instead of failing later with a bare Permission denied.
check_clone_writable() {
  [ "$(id -u)" = 0 ] && return 0
  local foreign
  foreign="$(find "$repo" -xdev ! -uid "$(id -u)" -print -quit 2>/dev/null || true)"
  if [ -n "$foreign" ]; then
    echo "burrow: $foreign (and maybe more in $repo) belongs to another user, left by an" \
      "earlier run as root; fix: sudo chown -R $(id -un): '$repo' (or sudo rm -rf '$repo/.venv')," \
      "then run this again" >&2
    exit 1
  fi
}
