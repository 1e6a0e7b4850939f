<?php
// Logs the browser in as ?user=..., the way an app would after a password check.
declare(strict_types=1);
session_start();
$_SESSION['user'] = (string) ($_GET['user'] ?? '');
header('Content-Type: text/plain');
echo 'logged in as ', $_SESSION['user'];
