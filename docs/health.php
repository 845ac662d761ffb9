<?php
// health.php: the page cutover probes on each server (failover probe_url, and each [sites] name's path).
// It says which server answered (its host name: the plan's new_marker / old_marker) and whether the server is in
// service (the health file keepalived's check reads, which the go-live flips). Never cached.
header('Content-Type: text/plain');
header('Cache-Control: no-store');
$state = trim((string) @file_get_contents('/var/www/health/state'));
http_response_code($state === 'true' ? 200 : 503);
echo gethostname(), ' ', $state === '' ? 'missing' : $state, "\n";
