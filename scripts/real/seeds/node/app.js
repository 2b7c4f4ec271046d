// GET /work?ms=N&status=S sleeps N milliseconds and answers S (Express).
'use strict';
const express = require('express');

const app = express();
app.get('/work', (req, res) => {
  setTimeout(() => res.status(Number(req.query.status || 200)).end(), Number(req.query.ms || 0));
});
app.listen(Number(process.env.PORT), '127.0.0.1');
