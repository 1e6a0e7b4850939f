<?php
// Checks wsbridge_verify against the signature vectors shared with the Go tests.
// Usage: php vectors.php ../signature_vectors.json
declare(strict_types=1);
require __DIR__ . '/verify.php';

$doc = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
$failed = 0;
foreach ($doc['vectors'] as $v) {
    $err = wsbridge_verify($v['secret'], $v['header'], $v['body'], $v['timestamp']);
    if (($err === null) !== $v['valid']) {
        $failed++;
        fwrite(STDERR, "FAIL {$v['name']}: " . ($err ?? 'accepted') . "\n");
    }
}
printf("%d vectors, %d failed\n", count($doc['vectors']), $failed);
exit($failed === 0 ? 0 : 1);
