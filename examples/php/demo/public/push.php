<?php

declare(strict_types=1);

/*
 * Pushes a notice to every connected browser from an ordinary PHP request: no WebSocket code
 * here, just an HTTP call to wsbridge's internal API. GET shows the form, POST sends.
 *
 * A real app would put this behind a login and a CSRF token; the demo keeps it open.
 */

require __DIR__ . '/wsbridge.php';

$text = '';
$answer = null; // the API's JSON answer, pretty-printed
$error = null;

if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $text = trim(is_string($_POST['text'] ?? null) ? $_POST['text'] : '');
    if ($text === '') {
        http_response_code(422);
        $error = 'Write something to push.';
    } elseif (preg_match('/^.{1,2000}$/sDu', $text) !== 1) { // also refuses invalid UTF-8
        http_response_code(422);
        $error = 'The notice must be UTF-8 text of at most 2000 characters.';
    } else {
        try {
            $result = wsbridge_api('POST', '/v1/publish', [
                'to' => ['all' => true],
                'data' => wsbridge_json(['type' => 'notice', 'text' => $text]),
            ]);
            $answer = json_encode($result, WSBRIDGE_JSON_FLAGS | JSON_PRETTY_PRINT);
        } catch (RuntimeException $e) {
            http_response_code(502);
            $error = $e->getMessage();
        }
    }
}

/** HTML-escapes a string for text and attribute contexts. */
function h(string $s): string
{
    return htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML5, 'UTF-8');
}

?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsbridge demo: push a notice</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .5rem; }
  button { font: inherit; padding: .4rem 1rem; margin-top: .5rem; }
  pre { background: #f4f4f4; padding: .75rem; border-radius: 4px; overflow-x: auto; }
  .error { color: #a00; }
</style>
</head>
<body>
<h1>Push a notice</h1>
<p>Sends <code>{"type":"notice","text":…}</code> to every open chat tab through
  <code>POST /v1/publish</code> with <code>{"to":{"all":true}}</code>.
  <a href="/">Back to the chat</a>.</p>

<form method="post" action="push.php">
  <label for="text">Notice</label>
  <textarea id="text" name="text" rows="3" maxlength="2000" required><?= h($text) ?></textarea>
  <button id="push" type="submit">Push to everyone</button>
</form>

<?php if ($error !== null): ?>
  <p id="error" class="error"><?= h($error) ?></p>
<?php endif; ?>
<?php if ($answer !== null): ?>
  <h2>API answer</h2>
  <pre id="answer"><?= h($answer) ?></pre>
<?php endif; ?>
</body>
</html>
