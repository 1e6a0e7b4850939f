<?php

declare(strict_types=1);

require __DIR__ . '/../app/bootstrap.php';

$user = current_user();
$h = static fn (string $s) => htmlspecialchars($s, ENT_QUOTES);
?><!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsbridge chat</title>
<link rel="stylesheet" href="/chat.css">
</head>
<body>
<?php if ($user === null): ?>
<main class="login">
  <h1>wsbridge chat</h1>
  <form method="post" action="/login.php">
    <label>Name <select name="name"><?php foreach (array_keys(USERS) as $u): ?><option><?= $h($u) ?></option><?php endforeach ?></select></label>
    <label>Password <input type="password" name="password" autocomplete="current-password"></label>
    <button type="submit">Log in</button>
    <?php if (isset($_GET['error'])): ?><p class="error">Wrong name or password.</p><?php endif ?>
    <p class="hint">Demo accounts: ann (admin), bob, cat; password <code><?= $h(DEMO_PASSWORD) ?></code>.</p>
  </form>
</main>
<?php else: ?>
<header>
  <h1>wsbridge chat</h1>
  <span id="me" data-user="<?= $h($user) ?>"><?= $h($user) ?><?= USERS[$user] === 'admin' ? ' (admin)' : '' ?></span>
  <span id="status" data-state="connecting">connecting…</span>
  <form method="post" action="/login.php"><button name="logout" value="1">Log out</button></form>
</header>
<div class="layout">
  <aside>
    <h2>Rooms</h2>
    <ul id="rooms"></ul>
    <form id="create"><input id="new-room" placeholder="new room" pattern="[a-z0-9][a-z0-9\-]{0,31}" required><button>Create</button></form>
    <h2>Online</h2>
    <ul id="online"></ul>
  </aside>
  <main>
    <h2 id="room-title">#lobby</h2>
    <ol id="log"></ol>
    <form id="say">
      <input id="text" autocomplete="off" placeholder="Message #lobby — or /pm user text, /join room, /leave room, /kick user">
      <button>Send</button>
      <label class="file" title="send a file or picture (64 KiB at most)">File…<input id="file" type="file"></label>
    </form>
  </main>
</div>
<script src="/chat.js"></script>
<?php endif ?>
</body>
</html>
