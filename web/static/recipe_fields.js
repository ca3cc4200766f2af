// Training and schedule forms: show the fields of the chosen recipe only. A field of
// another recipe is hidden and disabled, so it is not sent (the server refuses an
// option its recipe does not read).
(function () {
  for (const select of document.querySelectorAll('select.recipe-choice')) {
    const form = select.form;
    const apply = () => {
      for (const field of form.querySelectorAll('[data-recipes]')) {
        const recipes = field.dataset.recipes.split(' ').filter(Boolean);
        const shown = recipes.length === 0 || recipes.includes(select.value);
        field.hidden = !shown;
        for (const input of field.querySelectorAll('input, select')) input.disabled = !shown;
      }
    };
    select.addEventListener('change', apply);
    apply();
  }
})();
