<?php

declare(strict_types=1);

// The page: log in with a name (no password: this example is about pushing), then wait for
// notifications; and a form that sends one to any user from an ordinary PHP request.
require __DIR__ . '/../bootstrap.php';

session_start();
if (($_SERVER['REQUEST_METHOD'] ?? '') === 'POST' && isset($_POST['login']) && valid_user((string) $_POST['login'])) {
    session_regenerate_id(true);
    $_SESSION['user'] = $_POST['login'];
    header('Location: /', true, 303);
    exit;
}
$user = $_SESSION['user'] ?? null;
session_write_close();
$h = static fn (string $s) => htmlspecialchars($s, ENT_QUOTES);
?><!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>wsbridge notify</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
#notifications li { background: #fff8e0; border: 1px solid #eed; margin: .3em 0; padding: .4em; list-style: none; }
</style></head>
<body>
<h1>wsbridge notify</h1>
<?php if (!is_string($user)): ?>
<form method="post"><label>Your name <input name="login" pattern="[a-z0-9_\-]{1,32}" required></label> <button>Log in</button></form>
<?php else: ?>
<p>Logged in as <b id="me"><?= $h($user) ?></b> · <span id="status" data-state="connecting">connecting…</span>
 · over <a href="/">WebSocket</a> or <a href="/?transport=sse">Server-Sent Events</a></p>
<h2>Notifications</h2>
<ul id="notifications"></ul>
<h2>Send one</h2>
<form method="post" action="/send.php" id="send">
  <label>To <input name="to" value="<?= $h($user) ?>" required></label>
  <label>Text <input name="text" required></label>
  <button>Send</button>
</form>
<script src="/notify.js"></script>
<?php endif ?>
</body>
</html>
