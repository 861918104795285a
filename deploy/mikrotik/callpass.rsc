# callpass on a MikroTik Hotspot (RouterOS 7). Untested on a real router: written from MikroTik's
# documentation (the callpass side was tested with FreeRADIUS and radclient standing in for the
# router). Change the four values below, then: /import callpass.rsc
#
#   callpassHost   the host name or address of callpass (as in login.html's form address)
#   callpassIp     its IP address (the walled garden needs it)
#   radiusIp       the address FreeRADIUS listens on (deploy/freeradius/)
#   radiusSecret   the shared secret (CALLPASS_RADIUS_SECRET on the FreeRADIUS side)
#
# The hotspot itself (/ip hotspot setup) must exist already; its profile is "hsprof1" below.

:local callpassHost "portal.example.net"
:local callpassIp "192.0.2.10"
:local radiusIp "192.0.2.10"
:local radiusSecret "change-me"
:local profile "hsprof1"

# The RADIUS server: logins and accounting for the hotspot; interim updates every 5 minutes
# carry the bytes the law asks callpass to keep.
/radius add service=hotspot address=$radiusIp secret=$radiusSecret timeout=3s comment="callpass"

# Disconnect-Messages from callpass (ending a session on its admin page), RFC 5176 port 3799.
/radius incoming set accept=yes port=3799

# The profile: ask RADIUS; MAC login first (a verified device gets online at association, even if
# its sign-in sheet closed), then the login page (http-chap) for everyone else.
/ip hotspot profile set [find name=$profile] use-radius=yes radius-accounting=yes \
    radius-interim-update=5m login-by=mac,http-chap mac-auth-mode=mac-as-username \
    mac-auth-password="" html-directory=hotspot

# Guests may reach callpass before they are online.
/ip hotspot walled-garden add dst-host=$callpassHost comment="callpass"
/ip hotspot walled-garden ip add dst-address=$callpassIp action=accept comment="callpass"
