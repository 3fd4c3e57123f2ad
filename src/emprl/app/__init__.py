"""The local web page: compare policies side by side, rate replies blind (``emprl serve``, docs/app.md)."""
