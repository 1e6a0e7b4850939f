<?php
// The PHP side of cmd/wsbridge's cluster tests (cluster_test.go), served by `php -S`. It
// appends every webhook body to the file WSBRIDGE_TEST_LOG names, one JSON line each, so the
// test counts what PHP received from every node. An open with ?user=U&join=a,b is accepted as
// user U in those channels and sent "welcome <connection id>"; a message "publish <json>" is
// answered with that publication in "publish"; a message "echo" with "echo".
$body = file_get_contents('php://input');
$ev = json_decode($body, true);
file_put_contents(getenv('WSBRIDGE_TEST_LOG'), json_encode($ev) . "\n", FILE_APPEND | LOCK_EX);
header('Content-Type: application/json');
switch ($ev['type'] ?? '') {
case 'open':
    parse_str($ev['request']['query'] ?? '', $q);
    $reply = ['send' => ['welcome ' . $ev['connection_id']]];
    if (($q['user'] ?? '') !== '') {
        $reply['user_id'] = $q['user'];
    }
    if (($q['join'] ?? '') !== '') {
        $reply['join'] = explode(',', $q['join']);
    }
    echo json_encode($reply);
    break;
case 'message':
    $data = $ev['data'] ?? '';
    if (str_starts_with($data, 'publish ')) {
        echo json_encode(['publish' => [json_decode(substr($data, 8), true)]]);
    } else {
        echo json_encode(['send' => [$data]]);
    }
    break;
default:
    http_response_code(204);
}
